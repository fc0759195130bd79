//! The normalized `Event`: what every source (Telegram, simulated, fake DC) turns an update into.
//!
//! Ids are strings at every boundary (Telegram ids exceed 2^53 and JSON readers lose them as
//! numbers). `event_id` is a deterministic function of what identifies a change to a message
//! (account, chat, message id, kind, edit version), so the same update seen twice — by catch-up,
//! backfill overlap, redelivery or a restart — gets the same id and is deduplicated downstream.
//! The bytes on the bus come from [`crate::codec`], which versions the encoding separately.

use serde::{Deserialize, Serialize};

/// Version of the `Event` shape; bumped when a field changes meaning.
pub const SCHEMA_VERSION: u16 = 1;

/// Telegram's service account, which sends login codes (denied by default).
pub const TELEGRAM_SERVICE_CHAT: &str = "777000";

/// One normalized change seen by one account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub schema_version: u16,
    /// Deterministic: see [`event_id`].
    pub event_id: String,
    /// The ingesting account's Telegram user id.
    pub account_id: String,
    pub kind: EventKind,
    pub chat: Chat,
    /// Who sent it; `None` for channel posts without a signature.
    pub sender: Option<Sender>,
    /// Message id: per account in private chats and basic groups, per channel in channels.
    pub message_id: String,
    /// Forum topic (the topic's root message id); `None` outside forums.
    pub topic_id: Option<String>,
    /// The message this one replies to.
    pub reply_to: Option<String>,
    /// When the message was sent (unix microseconds).
    pub sent_at_us: i64,
    /// 0 for the original; for an edit, its edit date in unix seconds (Telegram has no counter).
    pub edit_version: u64,
    /// Message text or media caption, as received (redaction happens downstream).
    pub text: String,
    pub media: Option<Media>,
    pub source: Source,
    /// When tgingest saw it (unix microseconds).
    pub observed_at_us: i64,
}

/// What happened to the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A new message.
    Message,
    /// A new version of an existing message.
    Edit,
    /// The message was deleted.
    Delete,
    /// A service message (joins, pins, title changes…).
    Service,
}

impl EventKind {
    /// The stable tag hashed into `event_id` and used in subjects.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Message => "message",
            EventKind::Edit => "edit",
            EventKind::Delete => "delete",
            EventKind::Service => "service",
        }
    }
}

/// The chat a message lives in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chat {
    pub kind: ChatKind,
    /// The "marked" id: users positive, basic groups `-<id>`, supergroups and channels `-100<id>`.
    pub id: String,
    pub title: Option<String>,
}

/// Telegram's kinds of chat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChatKind {
    Private,
    Group,
    Supergroup,
    Channel,
}

impl ChatKind {
    /// Lower-case name, as used in subjects and in Switchboard's `chat_type`.
    pub fn as_str(self) -> &'static str {
        match self {
            ChatKind::Private => "private",
            ChatKind::Group => "group",
            ChatKind::Supergroup => "supergroup",
            ChatKind::Channel => "channel",
        }
    }

    /// All kinds, for iteration in configs and tests.
    pub const ALL: [ChatKind; 4] = [
        ChatKind::Private,
        ChatKind::Group,
        ChatKind::Supergroup,
        ChatKind::Channel,
    ];
}

impl std::str::FromStr for ChatKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        ChatKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                format!("unknown chat kind {s:?}: expected private, group, supergroup or channel")
            })
    }
}

/// Offset Telegram adds to channel and supergroup ids in their marked form.
const CHANNEL_MARK: i64 = 1_000_000_000_000;

/// The marked id of a chat, from its kind and bare (positive) id.
pub fn marked_chat_id(kind: ChatKind, bare_id: i64) -> String {
    match kind {
        ChatKind::Private => bare_id.to_string(),
        ChatKind::Group => (-bare_id).to_string(),
        ChatKind::Supergroup | ChatKind::Channel => (-(CHANNEL_MARK + bare_id)).to_string(),
    }
}

/// The bare id inside a marked id, and whether it is a user, a basic group or a channel.
pub fn parse_marked_chat_id(marked: &str) -> Option<(MarkedKind, i64)> {
    let n: i64 = marked.parse().ok()?;
    match n {
        n if n > 0 => Some((MarkedKind::User, n)),
        n if n < -CHANNEL_MARK => Some((MarkedKind::Channel, -n - CHANNEL_MARK)),
        n if n < 0 => Some((MarkedKind::Group, -n)),
        _ => None,
    }
}

/// The three id spaces a marked id can come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MarkedKind {
    User,
    Group,
    Channel,
}

/// Who sent a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sender {
    /// User id (or the channel's marked id for posts signed as a channel).
    pub id: String,
    pub display_name: Option<String>,
    /// The ingesting account itself (outgoing messages).
    pub is_self: bool,
}

/// What is known about attached media; the media bytes themselves are never ingested.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Media {
    pub kind: MediaKind,
    pub mime_type: Option<String>,
    pub size_bytes: Option<u64>,
    pub file_name: Option<String>,
}

/// Kinds of media Telegram attaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MediaKind {
    Photo,
    Video,
    Audio,
    Voice,
    Document,
    Sticker,
    Contact,
    Location,
    Poll,
    WebPage,
    Other,
}

/// How the event reached tgingest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// Pushed by Telegram while connected.
    Live,
    /// Recovered by getDifference after downtime or a gap.
    CatchUp,
    /// Read from history (first start, or a detected hole).
    Backfill,
}

/// The deterministic id: keyed blake3 over the identifying fields, 128 bits as 32 hex characters.
///
/// Each field is length-prefixed, so no two different inputs share a pre-image. The formula:
/// blake3 in derive-key mode with context `tgingest 2026-11 event_id v1`, over account, chat,
/// message id and kind name, each preceded by its byte length as a little-endian u64, then the
/// edit version as a little-endian u64; the first 16 bytes of the hash as lower-case hex.
pub fn event_id(
    account_id: &str,
    chat_id: &str,
    message_id: &str,
    kind: EventKind,
    edit_version: u64,
) -> String {
    let mut hasher = blake3::Hasher::new_derive_key("tgingest 2026-11 event_id v1");
    for field in [account_id, chat_id, message_id, kind.as_str()] {
        hasher.update(&(field.len() as u64).to_le_bytes());
        hasher.update(field.as_bytes());
    }
    hasher.update(&edit_version.to_le_bytes());
    hex::encode(&hasher.finalize().as_bytes()[..16])
}

/// Why an event from outside (a file, the bus) was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EventError {
    #[error("unsupported schema_version {0}: this build reads {SCHEMA_VERSION}")]
    SchemaVersion(u16),
    #[error("{field} must be a decimal id string, found {value:?}")]
    BadId { field: &'static str, value: String },
    #[error("chat.id {id:?} is not a marked id of a {kind} chat")]
    ChatMismatch { id: String, kind: &'static str },
    #[error("event_id {found:?} does not match its fields (expected {expected:?})")]
    IdMismatch { found: String, expected: String },
    #[error("edit_version must be 0 unless kind is edit, found {0}")]
    StrayEditVersion(u64),
}

fn decimal(field: &'static str, value: &str, signed: bool) -> Result<(), EventError> {
    let digits = if signed {
        value.strip_prefix('-').unwrap_or(value)
    } else {
        value
    };
    let ok = !digits.is_empty() && digits.len() <= 20 && digits.bytes().all(|b| b.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(EventError::BadId {
            field,
            value: value.to_string(),
        })
    }
}

impl Event {
    /// Recomputes the id from the fields.
    pub fn expected_id(&self) -> String {
        event_id(
            &self.account_id,
            &self.chat.id,
            &self.message_id,
            self.kind,
            self.edit_version,
        )
    }

    /// Checks what a producer outside this process could get wrong.
    pub fn validate(&self) -> Result<(), EventError> {
        if self.schema_version != SCHEMA_VERSION {
            return Err(EventError::SchemaVersion(self.schema_version));
        }
        decimal("account_id", &self.account_id, false)?;
        decimal("chat.id", &self.chat.id, true)?;
        decimal("message_id", &self.message_id, false)?;
        for (field, value) in [("topic_id", &self.topic_id), ("reply_to", &self.reply_to)] {
            if let Some(v) = value {
                decimal(field, v, false)?;
            }
        }
        if let Some(sender) = &self.sender {
            decimal("sender.id", &sender.id, true)?;
        }
        let matches = matches!(
            (self.chat.kind, parse_marked_chat_id(&self.chat.id)),
            (ChatKind::Private, Some((MarkedKind::User, _)))
                | (ChatKind::Group, Some((MarkedKind::Group, _)))
                | (
                    ChatKind::Supergroup | ChatKind::Channel,
                    Some((MarkedKind::Channel, _))
                )
        );
        if !matches {
            return Err(EventError::ChatMismatch {
                id: self.chat.id.clone(),
                kind: self.chat.kind.as_str(),
            });
        }
        if self.kind != EventKind::Edit && self.edit_version != 0 {
            return Err(EventError::StrayEditVersion(self.edit_version));
        }
        let expected = self.expected_id();
        if self.event_id != expected {
            return Err(EventError::IdMismatch {
                found: self.event_id.clone(),
                expected,
            });
        }
        Ok(())
    }
}

/// Formats unix microseconds as RFC 3339 in UTC with exactly six fractional digits.
pub fn rfc3339_micros(unix_us: i64) -> String {
    match jiff::Timestamp::from_microsecond(unix_us) {
        Ok(ts) => ts.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string(),
        Err(_) => "1970-01-01T00:00:00.000000Z".to_string(),
    }
}

/// Now, in unix microseconds.
pub fn now_us() -> i64 {
    jiff::Timestamp::now().as_microsecond()
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> Event {
        let chat_id = marked_chat_id(ChatKind::Supergroup, 1_234_567);
        Event {
            schema_version: SCHEMA_VERSION,
            event_id: event_id("42", &chat_id, "7", EventKind::Message, 0),
            account_id: "42".into(),
            kind: EventKind::Message,
            chat: Chat {
                kind: ChatKind::Supergroup,
                id: chat_id,
                title: Some("Team".into()),
            },
            sender: Some(Sender {
                id: "99".into(),
                display_name: None,
                is_self: false,
            }),
            message_id: "7".into(),
            topic_id: Some("3".into()),
            reply_to: None,
            sent_at_us: 1_700_000_000_000_000,
            edit_version: 0,
            text: "hello".into(),
            media: Some(Media {
                kind: MediaKind::Photo,
                mime_type: Some("image/jpeg".into()),
                size_bytes: Some(1),
                file_name: None,
            }),
            source: Source::Live,
            observed_at_us: 1_700_000_000_123_456,
        }
    }

    #[test]
    fn event_id_is_deterministic_and_sensitive_to_every_identifying_field() {
        let base = event_id("1", "-1001", "5", EventKind::Message, 0);
        assert_eq!(base, event_id("1", "-1001", "5", EventKind::Message, 0));
        assert_eq!(base.len(), 32);
        let variants = [
            event_id("2", "-1001", "5", EventKind::Message, 0),
            event_id("1", "-1002", "5", EventKind::Message, 0),
            event_id("1", "-1001", "6", EventKind::Message, 0),
            event_id("1", "-1001", "5", EventKind::Delete, 0),
            event_id("1", "-1001", "5", EventKind::Edit, 1),
            // length prefixes: moving a digit between fields changes the id
            event_id("1-", "1001", "5", EventKind::Message, 0),
        ];
        for v in variants {
            assert_ne!(v, base);
        }
    }

    /// Pinned literals, computed outside Rust (Python's `blake3` package) from the documented
    /// formula: derive-key context `tgingest 2026-11 event_id v1`; account, chat, message id and
    /// kind name each prefixed by their byte length as a little-endian u64; the edit version as a
    /// little-endian u64; the first 16 bytes of the hash in lower-case hex. Any drift of the id
    /// function (context, field order, prefixes, truncation) changes every id ever stored, so it
    /// must fail here rather than pass the "deterministic" test above.
    #[test]
    fn event_id_matches_ids_computed_independently_from_the_documented_formula() {
        assert_eq!(
            event_id("1", "-1001", "5", EventKind::Message, 0),
            "c19a2712b17a162cfee1938ba58bec6c"
        );
        assert_eq!(
            event_id("42", "-1000000000123", "7", EventKind::Edit, 3),
            "3418f957330433b225da17d9c2743060"
        );
    }

    #[test]
    fn marked_ids_follow_telegrams_rules_and_round_trip() {
        assert_eq!(marked_chat_id(ChatKind::Private, 777_000), "777000");
        assert_eq!(marked_chat_id(ChatKind::Group, 123), "-123");
        assert_eq!(marked_chat_id(ChatKind::Channel, 123), "-1000000000123");
        for (kind, marked) in [
            (MarkedKind::User, "5"),
            (MarkedKind::Group, "-5"),
            (MarkedKind::Channel, "-1000000000005"),
        ] {
            assert_eq!(parse_marked_chat_id(marked), Some((kind, 5)));
        }
        assert_eq!(parse_marked_chat_id("0"), None);
        assert_eq!(parse_marked_chat_id("x"), None);
    }

    #[test]
    fn codec_round_trips_an_event() {
        let e = sample();
        let bytes = crate::codec::encode(&e).unwrap();
        assert_eq!(crate::codec::decode::<Event>(&bytes).unwrap(), e);
    }

    #[test]
    fn validate_names_the_bad_field() {
        sample().validate().unwrap();
        let mut e = sample();
        e.message_id = "7a".into();
        assert_eq!(
            e.validate(),
            Err(EventError::BadId {
                field: "message_id",
                value: "7a".into()
            })
        );
        let mut e = sample();
        e.chat.kind = ChatKind::Private;
        assert!(matches!(e.validate(), Err(EventError::ChatMismatch { .. })));
        let mut e = sample();
        e.text = "changed text keeps the id".into();
        e.validate().unwrap();
        e.edit_version = 5;
        assert_eq!(e.validate(), Err(EventError::StrayEditVersion(5)));
        let mut e = sample();
        e.event_id = "0".repeat(32);
        assert!(matches!(e.validate(), Err(EventError::IdMismatch { .. })));
    }

    #[test]
    fn timestamps_have_six_fractional_digits() {
        assert_eq!(
            rfc3339_micros(1_700_000_000_123_456),
            "2023-11-14T22:13:20.123456Z"
        );
        assert_eq!(rfc3339_micros(0), "1970-01-01T00:00:00.000000Z");
    }
}
