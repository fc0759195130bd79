//! Scope: whether an event may leave at all, from its chat, chat kind, sender and kind.
//!
//! Every rule must pass; deny rules are checked before allow rules, so a chat that is both
//! allowed and denied (by id or by kind) is denied, and the reported rule is the deny rule.

use std::collections::HashSet;
use std::fmt;

use serde::Serialize;

use super::config::{AccountPolicyConfig, PolicyConfig};
use crate::event::{ChatKind, Event, EventKind, TELEGRAM_SERVICE_CHAT};

/// The rule that dropped an event (also the `rule` label of `tgingest_scope_drops_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropRule {
    /// Chat 777000 (Telegram's login codes) while `allow_telegram_service_chat` is false.
    TelegramServiceChat,
    /// The event's kind is listed in `drop_event_kinds`.
    DropEventKind(EventKind),
    /// The chat is listed in `deny_chats`.
    DenyChats,
    /// The chat's kind is listed in `deny_chat_kinds`.
    DenyChatKinds,
    /// The sender is listed in `deny_senders`.
    DenySenders,
    /// `allow_chats` is set and does not list the chat.
    AllowChats,
    /// `allow_chat_kinds` is set and does not list the chat's kind.
    AllowChatKinds,
    /// `allow_senders` is set and does not list the sender (or there is none).
    AllowSenders,
}

impl DropRule {
    /// Stable name: the config key, plus `:<kind>` for `drop_event_kinds`.
    pub fn as_str(self) -> &'static str {
        match self {
            DropRule::TelegramServiceChat => "telegram_service_chat",
            DropRule::DropEventKind(EventKind::Message) => "drop_event_kinds:message",
            DropRule::DropEventKind(EventKind::Edit) => "drop_event_kinds:edit",
            DropRule::DropEventKind(EventKind::Delete) => "drop_event_kinds:delete",
            DropRule::DropEventKind(EventKind::Service) => "drop_event_kinds:service",
            DropRule::DenyChats => "deny_chats",
            DropRule::DenyChatKinds => "deny_chat_kinds",
            DropRule::DenySenders => "deny_senders",
            DropRule::AllowChats => "allow_chats",
            DropRule::AllowChatKinds => "allow_chat_kinds",
            DropRule::AllowSenders => "allow_senders",
        }
    }
}

impl fmt::Display for DropRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for DropRule {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

fn chat_bit(k: ChatKind) -> u8 {
    1 << (k as u8)
}

fn event_bit(k: EventKind) -> u8 {
    1 << (k as u8)
}

/// The effective scope rules of one account (the global ones with its overrides applied).
#[derive(Debug, Clone)]
pub(crate) struct ScopeRules {
    allow_chats: HashSet<String>,
    deny_chats: HashSet<String>,
    /// Bit per chat kind; 0 = all kinds allowed.
    allow_chat_kinds: u8,
    deny_chat_kinds: u8,
    allow_senders: HashSet<String>,
    deny_senders: HashSet<String>,
    drop_event_kinds: u8,
    allow_telegram_service_chat: bool,
}

impl ScopeRules {
    /// The global rules with `account`'s overrides (if any) replacing whole keys.
    pub(crate) fn new(global: &PolicyConfig, account: Option<&AccountPolicyConfig>) -> Self {
        let pick = |o: Option<&Vec<String>>, g: &Vec<String>| -> HashSet<String> {
            o.unwrap_or(g).iter().cloned().collect()
        };
        let kinds = |o: Option<&Vec<ChatKind>>, g: &Vec<ChatKind>| -> u8 {
            o.unwrap_or(g).iter().fold(0, |m, &k| m | chat_bit(k))
        };
        let a = account;
        ScopeRules {
            allow_chats: pick(a.and_then(|a| a.allow_chats.as_ref()), &global.allow_chats),
            deny_chats: pick(a.and_then(|a| a.deny_chats.as_ref()), &global.deny_chats),
            allow_chat_kinds: kinds(
                a.and_then(|a| a.allow_chat_kinds.as_ref()),
                &global.allow_chat_kinds,
            ),
            deny_chat_kinds: kinds(
                a.and_then(|a| a.deny_chat_kinds.as_ref()),
                &global.deny_chat_kinds,
            ),
            allow_senders: pick(
                a.and_then(|a| a.allow_senders.as_ref()),
                &global.allow_senders,
            ),
            deny_senders: pick(
                a.and_then(|a| a.deny_senders.as_ref()),
                &global.deny_senders,
            ),
            drop_event_kinds: a
                .and_then(|a| a.drop_event_kinds.as_ref())
                .unwrap_or(&global.drop_event_kinds)
                .iter()
                .fold(0, |m, &k| m | event_bit(k)),
            allow_telegram_service_chat: a
                .and_then(|a| a.allow_telegram_service_chat)
                .unwrap_or(global.allow_telegram_service_chat),
        }
    }

    /// `Ok` when the event is in scope, else the first rule (in precedence order) it breaks.
    pub(crate) fn check(&self, e: &Event) -> Result<(), DropRule> {
        if e.chat.id == TELEGRAM_SERVICE_CHAT && !self.allow_telegram_service_chat {
            return Err(DropRule::TelegramServiceChat);
        }
        if self.drop_event_kinds & event_bit(e.kind) != 0 {
            return Err(DropRule::DropEventKind(e.kind));
        }
        if self.deny_chats.contains(&e.chat.id) {
            return Err(DropRule::DenyChats);
        }
        if self.deny_chat_kinds & chat_bit(e.chat.kind) != 0 {
            return Err(DropRule::DenyChatKinds);
        }
        // Deletions carry no sender: who wrote the deleted message is unknown, so sender rules
        // cannot judge them (and a deletion of something never delivered is harmless).
        let sender = e.sender.as_ref().map(|s| s.id.as_str());
        let judge_sender = !(e.kind == EventKind::Delete && sender.is_none());
        if let Some(id) = sender
            && self.deny_senders.contains(id)
        {
            return Err(DropRule::DenySenders);
        }
        if !self.allow_chats.is_empty() && !self.allow_chats.contains(&e.chat.id) {
            return Err(DropRule::AllowChats);
        }
        if self.allow_chat_kinds != 0 && self.allow_chat_kinds & chat_bit(e.chat.kind) == 0 {
            return Err(DropRule::AllowChatKinds);
        }
        if judge_sender
            && !self.allow_senders.is_empty()
            && !sender.is_some_and(|id| self.allow_senders.contains(id))
        {
            return Err(DropRule::AllowSenders);
        }
        Ok(())
    }
}
