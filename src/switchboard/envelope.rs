//! One [`Event`] → one `ingest.v1` envelope, exactly the keys the contract allows.
//!
//! Switchboard rejects unknown keys at every level, so everything that has no slot of its own
//! (kind, edit version, reply-to, topic, media metadata, source, send time, chat kind) goes into
//! `payload.raw`.
//!
//! ## Why `normalized_text` ends with a reference line
//!
//! Besides the idempotency key, Switchboard drops an envelope as a duplicate when
//! `normalized_text` + `sender.identity` + the hour of `observed_at` match an earlier one, across
//! all chats. Two real messages with the same text from one person within an hour ("ok", "👍",
//! a forwarded link posted to two groups) would lose the second one. So every `normalized_text`
//! ends with a line naming the message, `[tg:<marked_chat_id>:<message_id>]` plus `:edit:<v>` or
//! `:delete` (the idempotency key's own shape): the text stays readable for triage, the
//! reference carries nothing the envelope does not already carry in `external_thread_id` and
//! `external_event_id`, and two envelopes can only share a content hash when they share a key,
//! i.e. when they are the same change to the same message — which is what the key dedupes anyway.

use serde_json::{Map, Value, json};

use crate::config::SwitchboardConfig;
use crate::event::{Event, EventKind, MediaKind, rfc3339_micros};

use super::INGEST_SCHEMA;

/// The `ingest.v1` envelope of one event, as the arguments of the `ingest` tool.
pub fn envelope(event: &Event, cfg: &SwitchboardConfig) -> Value {
    let mut sender = Map::new();
    sender.insert("identity".into(), Value::String(sender_identity(event)));
    if cfg.send_sender_details {
        if let Some(name) = event.sender.as_ref().and_then(|s| s.display_name.as_ref())
            && !name.trim().is_empty()
        {
            sender.insert("display_name".into(), Value::String(name.clone()));
        }
        sender.insert(
            "chat_type".into(),
            Value::String(event.chat.kind.as_str().into()),
        );
        // participant_count: the Event does not carry it, so it is left out (it is optional).
    }

    json!({
        "schema_version": INGEST_SCHEMA,
        "source": {
            "channel": cfg.channel,
            "provider": cfg.provider,
            "endpoint_identity": endpoint_identity(&cfg.endpoint_identity, &event.account_id),
        },
        "event": {
            "external_event_id": event.message_id,
            "external_thread_id": non_empty(&event.chat.id),
            "observed_at": rfc3339_micros(event.observed_at_us),
        },
        "sender": Value::Object(sender),
        "payload": {
            "raw": raw(event),
            "normalized_text": normalized_text(event),
        },
        "control": {
            "idempotency_key": idempotency_key(event),
        },
    })
}

/// `source.endpoint_identity`: the configured template with `{account}` replaced.
pub fn endpoint_identity(template: &str, account_id: &str) -> String {
    template.replace("{account}", account_id)
}

/// `tg:<marked_chat_id>:<message_id>`, then `:edit:<edit_version>` for edits or `:delete` for
/// deletions: the original is keyed like the existing Python connector keys it.
pub fn idempotency_key(event: &Event) -> String {
    let base = format!("tg:{}:{}", event.chat.id, event.message_id);
    match event.kind {
        EventKind::Edit => format!("{base}:edit:{}", event.edit_version),
        EventKind::Delete => format!("{base}:delete"),
        EventKind::Message | EventKind::Service => base,
    }
}

/// The text Switchboard triages: the message text (or a placeholder), then a reference line that
/// makes it unique per message (see the module docs for why).
pub fn normalized_text(event: &Event) -> String {
    format!("{}\n[{}]", body(event), idempotency_key(event))
}

/// The message's readable text: trimmed text, a placeholder for media (before any caption), or
/// one for a deletion, a service message or an empty message. Also a batch entry's `text`.
pub fn body(event: &Event) -> String {
    let text = event.text.trim();
    let media = event.media.as_ref().map(|m| media_placeholder(m.kind));
    match (event.kind, media, text.is_empty()) {
        (EventKind::Delete, _, _) => "[deleted message]".to_string(),
        (_, Some(m), false) => format!("{m} {text}"),
        (_, Some(m), true) => m.to_string(),
        (_, None, false) => text.to_string(),
        (EventKind::Service, None, true) => "[service message]".to_string(),
        (_, None, true) => "[empty message]".to_string(),
    }
}

/// Who sent it; a channel post without a signature is attributed to the channel itself (and an
/// event with neither, such as a deletion Telegram reported without its chat, to the account).
pub(crate) fn sender_identity(event: &Event) -> String {
    [
        event.sender.as_ref().map(|s| s.id.as_str()),
        Some(event.chat.id.as_str()),
    ]
    .into_iter()
    .flatten()
    .find(|id| !id.trim().is_empty())
    .unwrap_or(&event.account_id)
    .to_string()
}

/// Switchboard takes a non-empty string or null, never `""`.
pub(crate) fn non_empty(s: &str) -> Option<&str> {
    (!s.trim().is_empty()).then_some(s)
}

/// What stands for media of `kind` at the start of `normalized_text` (`[photo] caption`).
pub fn media_placeholder(kind: MediaKind) -> &'static str {
    match kind {
        MediaKind::Photo => "[photo]",
        MediaKind::Video => "[video]",
        MediaKind::Audio => "[audio]",
        MediaKind::Voice => "[voice message]",
        MediaKind::Document => "[document]",
        MediaKind::Sticker => "[sticker]",
        MediaKind::Contact => "[contact]",
        MediaKind::Location => "[location]",
        MediaKind::Poll => "[poll]",
        MediaKind::WebPage => "[web page]",
        MediaKind::Other => "[media]",
    }
}

/// Everything without a slot of its own in the contract. Ids stay strings (they exceed 2^53).
fn raw(event: &Event) -> Value {
    let media = event.media.as_ref().map(|m| {
        json!({
            "kind": m.kind,
            "mime_type": m.mime_type,
            "size_bytes": m.size_bytes,
            "file_name": m.file_name,
        })
    });
    json!({
        "event_id": event.event_id,
        "kind": event.kind.as_str(),
        "edit_version": event.edit_version,
        "reply_to": event.reply_to,
        "topic_id": event.topic_id,
        "media": media,
        "source": event.source,
        "sent_at": rfc3339_micros(event.sent_at_us),
        "chat_kind": event.chat.kind.as_str(),
        "chat_title": event.chat.title,
        "outgoing": event.sender.as_ref().is_some_and(|s| s.is_self),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{
        Chat, ChatKind, Media, SCHEMA_VERSION, Sender, Source, event_id, marked_chat_id,
    };

    fn event(kind: EventKind, edit_version: u64) -> Event {
        let chat = marked_chat_id(ChatKind::Supergroup, 77);
        Event {
            schema_version: SCHEMA_VERSION,
            event_id: event_id("42", &chat, "7", kind, edit_version),
            account_id: "42".into(),
            kind,
            chat: Chat {
                kind: ChatKind::Supergroup,
                id: chat,
                title: Some("Team".into()),
            },
            sender: Some(Sender {
                id: "99".into(),
                display_name: Some("Ann".into()),
                is_self: false,
            }),
            message_id: "7".into(),
            topic_id: None,
            reply_to: Some("5".into()),
            sent_at_us: 1_700_000_000_000_000,
            edit_version,
            text: "  hello  ".into(),
            media: None,
            source: Source::Live,
            observed_at_us: 1_700_000_000_123_456,
        }
    }

    #[test]
    fn keys_follow_the_python_connector_and_separate_edits_and_deletes() {
        assert_eq!(
            idempotency_key(&event(EventKind::Message, 0)),
            "tg:-1000000000077:7"
        );
        assert_eq!(
            idempotency_key(&event(EventKind::Edit, 1_700_000_100)),
            "tg:-1000000000077:7:edit:1700000100"
        );
        assert_eq!(
            idempotency_key(&event(EventKind::Delete, 0)),
            "tg:-1000000000077:7:delete"
        );
    }

    #[test]
    fn normalized_text_is_trimmed_text_plus_the_reference_line() {
        let e = event(EventKind::Message, 0);
        assert_eq!(normalized_text(&e), "hello\n[tg:-1000000000077:7]");
        let mut media = e.clone();
        media.text = " ".into();
        media.media = Some(Media {
            kind: MediaKind::Photo,
            mime_type: None,
            size_bytes: None,
            file_name: None,
        });
        assert_eq!(normalized_text(&media), "[photo]\n[tg:-1000000000077:7]");
        media.text = "look".into();
        assert_eq!(
            normalized_text(&media),
            "[photo] look\n[tg:-1000000000077:7]"
        );
    }

    #[test]
    fn sender_details_only_when_configured() {
        let e = event(EventKind::Message, 0);
        let mut cfg = SwitchboardConfig::default();
        let plain = envelope(&e, &cfg);
        assert_eq!(plain["sender"], json!({"identity": "99"}));
        cfg.send_sender_details = true;
        let detailed = envelope(&e, &cfg);
        assert_eq!(
            detailed["sender"],
            json!({"identity": "99", "display_name": "Ann", "chat_type": "supergroup"})
        );
        assert_eq!(
            detailed["source"]["endpoint_identity"], "telegram:user:42",
            "the template's {{account}} is the account id"
        );
        assert_eq!(
            detailed["event"]["observed_at"],
            "2023-11-14T22:13:20.123456Z"
        );
    }
}
