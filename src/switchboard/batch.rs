//! One recorded conversation-history batch → one `ingest.v1` envelope of payload type
//! `conversation_history`, the shape the butlers Telegram user-client connector sends since
//! spring 2026 (`/work/shared/switchboard-contract.md`, "Conversation-history batches").
//!
//! A [`Batch`] is what the batcher records in `TG_BATCH` before anything is sent: its members
//! (`is_new`) and its context, already redacted (they come from `TG_CLEAN`), and its flush time.
//! The envelope is a pure function of the record and the Switchboard config, so a re-send after
//! a crash and an operator's replay send the very same envelope, and Switchboard answers them as
//! duplicates by the key `tg_batch:<chat>:<min_id>:<max_id>`.
//!
//! Texts are the single envelopes' texts ([`super::envelope::body`]): redacted the same way
//! upstream, and not HTML-escaped (single messages are not either; the butlers connector escapes
//! only its single-message text, which is the inconsistency the contract notes).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::INGEST_SCHEMA;
use super::envelope::{body, endpoint_identity, sender_identity};
use crate::config::SwitchboardConfig;
use crate::event::{Chat, Event, rfc3339_micros};

/// `control.payload_type` of a batch: routes it to Switchboard's conversation decomposition.
pub const PAYLOAD_TYPE: &str = "conversation_history";
/// `sender.identity` of a batch.
pub const MULTIPLE: &str = "multiple";

/// One message of a batch: a member (`is_new`) or context.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchEntry {
    /// The event this entry shows (members are exactly-once per event id).
    pub event_id: String,
    pub message_id: String,
    pub sender_id: String,
    pub display_name: String,
    /// Redacted text, or a placeholder for media, as in a single envelope.
    pub text: String,
    pub sent_at_us: i64,
    pub is_new: bool,
    pub reply_to: Option<String>,
}

impl BatchEntry {
    /// The entry of a kept (already redacted) `TG_CLEAN` event.
    pub fn of(event: &Event, is_new: bool) -> BatchEntry {
        let sender_id = sender_identity(event);
        let display_name = event
            .sender
            .as_ref()
            .and_then(|s| s.display_name.clone())
            .filter(|n| !n.trim().is_empty())
            .unwrap_or_else(|| sender_id.clone());
        BatchEntry {
            event_id: event.event_id.clone(),
            message_id: event.message_id.clone(),
            sender_id,
            display_name,
            text: body(event),
            sent_at_us: event.sent_at_us,
            is_new,
            reply_to: event.reply_to.clone(),
        }
    }
}

/// A batch as recorded in `TG_BATCH` (JSON): everything its envelope is built from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batch {
    pub account_id: String,
    pub chat: Chat,
    /// When the batch was cut: the envelope's `observed_at`.
    pub flushed_at_us: i64,
    /// Members and context, sorted by message id.
    pub entries: Vec<BatchEntry>,
}

/// Sort key of a message id: numerically when it is a number (Telegram's are), else by text.
pub fn id_order(id: &str) -> (u64, &str) {
    (id.parse().unwrap_or(u64::MAX), id)
}

impl Batch {
    /// The members (`is_new`), in message-id order.
    pub fn members(&self) -> impl Iterator<Item = &BatchEntry> {
        self.entries.iter().filter(|e| e.is_new)
    }

    /// The lowest and highest member message ids (`None` for a batch without members, which the
    /// batcher never records).
    pub fn bounds(&self) -> Option<(&str, &str)> {
        let mut members = self.members();
        let first = members.next()?;
        let last = members.last().unwrap_or(first);
        Some((first.message_id.as_str(), last.message_id.as_str()))
    }

    /// `tg_batch:<chat>:<min_id>:<max_id>`: `control.idempotency_key`.
    pub fn idempotency_key(&self) -> String {
        let (min, max) = self.bounds().unwrap_or(("", ""));
        format!("tg_batch:{}:{min}:{max}", self.chat.id)
    }

    /// `batch:<chat>:<min_id>-<max_id>`: `event.external_event_id`.
    pub fn external_event_id(&self) -> String {
        let (min, max) = self.bounds().unwrap_or(("", ""));
        format!("batch:{}:{min}-{max}", self.chat.id)
    }

    /// The `Nats-Msg-Id` of the record: the idempotency key, scoped by account (as Switchboard
    /// scopes the key by endpoint).
    pub fn msg_id(&self) -> String {
        format!("{}:{}", self.account_id, self.idempotency_key())
    }

    /// `{sender id → display name}` over every entry (the last name seen wins).
    pub fn participants(&self) -> BTreeMap<String, String> {
        self.entries
            .iter()
            .map(|e| (e.sender_id.clone(), e.display_name.clone()))
            .collect()
    }
}

/// The `ingest.v1` envelope of a recorded batch.
pub fn batch_envelope(batch: &Batch, cfg: &SwitchboardConfig) -> Value {
    let participants = batch.participants();
    let mut sender = Map::new();
    sender.insert("identity".into(), MULTIPLE.into());
    sender.insert("participants".into(), json!(participants));
    // The account is the user whose id it carries (`telegram:user:{account}`).
    sender.insert("owner_sender_id".into(), json!(batch.account_id));
    if cfg.send_sender_details {
        sender.insert("participant_count".into(), json!(participants.len()));
        sender.insert("chat_type".into(), json!(batch.chat.kind.as_str()));
    }
    let history: Vec<Value> = batch
        .entries
        .iter()
        .map(|e| {
            json!({
                "message_id": e.message_id,
                "sender_id": e.sender_id,
                "display_name": e.display_name,
                "text": e.text,
                "timestamp": rfc3339_micros(e.sent_at_us),
                "is_new": e.is_new,
                "reply_to": e.reply_to,
            })
        })
        .collect();
    let event_ids: Vec<&str> = batch.members().map(|e| e.event_id.as_str()).collect();
    json!({
        "schema_version": INGEST_SCHEMA,
        "source": {
            "channel": cfg.channel,
            "provider": cfg.provider,
            "endpoint_identity": endpoint_identity(&cfg.endpoint_identity, &batch.account_id),
        },
        "event": {
            "external_event_id": batch.external_event_id(),
            "external_thread_id": batch.chat.id,
            "observed_at": rfc3339_micros(batch.flushed_at_us),
        },
        "sender": Value::Object(sender),
        "payload": {
            "raw": {
                "conversation_history": history,
                "event_ids": event_ids,
                "chat_kind": batch.chat.kind.as_str(),
                "chat_title": batch.chat.title,
            },
            "normalized_text": transcript(batch, &participants),
        },
        "control": {
            "idempotency_key": batch.idempotency_key(),
            "payload_type": PAYLOAD_TYPE,
        },
    })
}

/// The readable transcript: a chat header (title and id), the window, the participants, one
/// `[name]: text` line per entry (line breaks inside a text become spaces), the counts, and the
/// key on a reference line (so two batches never share Switchboard's content hash).
pub fn transcript(batch: &Batch, participants: &BTreeMap<String, String>) -> String {
    let title = batch.chat.title.as_deref().unwrap_or("(untitled)");
    let mut out = format!("Chat: {title} ({})\n", batch.chat.id);
    if let (Some(first), Some(last)) = (batch.entries.first(), batch.entries.last()) {
        out.push_str(&format!(
            "Window: {} to {}\n",
            rfc3339_micros(first.sent_at_us),
            rfc3339_micros(last.sent_at_us)
        ));
    }
    let names: Vec<&str> = participants.values().map(String::as_str).collect();
    out.push_str(&format!("Participants: {}\n", names.join(", ")));
    for e in &batch.entries {
        let text: String = e
            .text
            .chars()
            .map(|c| if c == '\n' || c == '\r' { ' ' } else { c })
            .collect();
        out.push_str(&format!("[{}]: {}\n", e.display_name, text.trim()));
    }
    let new = batch.members().count();
    out.push_str(&format!(
        "{new} new message{}, {} context message{}\n[{}]",
        if new == 1 { "" } else { "s" },
        batch.entries.len() - new,
        if batch.entries.len() - new == 1 {
            ""
        } else {
            "s"
        },
        batch.idempotency_key()
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{ChatKind, marked_chat_id};

    fn entry(id: &str, sender: &str, name: &str, is_new: bool) -> BatchEntry {
        BatchEntry {
            event_id: format!("ev{id}"),
            message_id: id.into(),
            sender_id: sender.into(),
            display_name: name.into(),
            text: format!("text {id}\nsecond line"),
            sent_at_us: 1_700_000_000_000_000 + id.parse::<i64>().unwrap() * 1_000_000,
            is_new,
            reply_to: None,
        }
    }

    fn batch() -> Batch {
        Batch {
            account_id: "42".into(),
            chat: Chat {
                kind: ChatKind::Supergroup,
                id: marked_chat_id(ChatKind::Supergroup, 77),
                title: Some("Team".into()),
            },
            flushed_at_us: 1_700_000_100_000_000,
            entries: vec![
                entry("8", "99", "Ann", false),
                entry("9", "98", "Bob", true),
                entry("10", "99", "Ann", true),
            ],
        }
    }

    #[test]
    fn keys_and_ids_follow_the_butlers_batch_shape() {
        let b = batch();
        assert_eq!(b.idempotency_key(), "tg_batch:-1000000000077:9:10");
        assert_eq!(b.external_event_id(), "batch:-1000000000077:9-10");
        assert_eq!(b.msg_id(), "42:tg_batch:-1000000000077:9:10");
    }

    #[test]
    fn envelope_carries_every_contract_field_and_nothing_else() {
        let cfg = SwitchboardConfig {
            send_sender_details: true,
            ..SwitchboardConfig::default()
        };
        let env = batch_envelope(&batch(), &cfg);
        assert_eq!(env["event"]["external_thread_id"], "-1000000000077");
        assert_eq!(env["event"]["observed_at"], "2023-11-14T22:15:00.000000Z");
        assert_eq!(
            env["sender"],
            json!({
                "identity": "multiple",
                "participants": {"98": "Bob", "99": "Ann"},
                "owner_sender_id": "42",
                "participant_count": 2,
                "chat_type": "supergroup",
            })
        );
        assert_eq!(
            env["control"],
            json!({"idempotency_key": "tg_batch:-1000000000077:9:10", "payload_type": "conversation_history"})
        );
        let history = env["payload"]["raw"]["conversation_history"]
            .as_array()
            .unwrap();
        let ids: Vec<&str> = history
            .iter()
            .map(|e| e["message_id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["8", "9", "10"], "sorted by message id, numerically");
        assert_eq!(
            history[1],
            json!({
                "message_id": "9", "sender_id": "98", "display_name": "Bob",
                "text": "text 9\nsecond line", "timestamp": "2023-11-14T22:13:29.000000Z",
                "is_new": true, "reply_to": null,
            })
        );
        assert_eq!(env["payload"]["raw"]["event_ids"], json!(["ev9", "ev10"]));
    }

    #[test]
    fn sender_details_only_when_configured() {
        let env = batch_envelope(&batch(), &SwitchboardConfig::default());
        let sender = env["sender"].as_object().unwrap();
        assert!(!sender.contains_key("participant_count") && !sender.contains_key("chat_type"));
    }

    #[test]
    fn transcript_has_header_window_participants_one_line_per_entry_and_counts() {
        let b = batch();
        let text = transcript(&b, &b.participants());
        assert_eq!(
            text,
            "Chat: Team (-1000000000077)\n\
             Window: 2023-11-14T22:13:28.000000Z to 2023-11-14T22:13:30.000000Z\n\
             Participants: Bob, Ann\n\
             [Ann]: text 8 second line\n\
             [Bob]: text 9 second line\n\
             [Ann]: text 10 second line\n\
             2 new messages, 1 context message\n\
             [tg_batch:-1000000000077:9:10]"
        );
    }
}
