//! Events built by hand, for tests that need particular text, titles or names in them.

use tgingest::event::{
    Chat, ChatKind, Event, EventKind, SCHEMA_VERSION, Sender, Source, event_id, marked_chat_id,
};

/// What varies between hand-made messages; [`Message::event`] fills in the rest.
pub struct Message<'a> {
    pub kind: ChatKind,
    pub bare_chat: i64,
    pub n: u64,
    pub title: Option<&'a str>,
    pub sender_name: Option<&'a str>,
    pub text: String,
}

impl Message<'_> {
    /// Message `n` seen by account 42 from sender 99, valid by [`Event::validate`].
    pub fn event(&self) -> Event {
        let chat = marked_chat_id(self.kind, self.bare_chat);
        let message_id = self.n.to_string();
        Event {
            schema_version: SCHEMA_VERSION,
            event_id: event_id("42", &chat, &message_id, EventKind::Message, 0),
            account_id: "42".into(),
            kind: EventKind::Message,
            chat: Chat {
                kind: self.kind,
                id: chat,
                title: self.title.map(str::to_string),
            },
            sender: Some(Sender {
                id: "99".into(),
                display_name: self.sender_name.map(str::to_string),
                is_self: false,
            }),
            message_id,
            topic_id: None,
            reply_to: None,
            sent_at_us: 1_700_000_000_000_000 + self.n as i64,
            edit_version: 0,
            text: self.text.clone(),
            media: None,
            source: Source::Live,
            observed_at_us: 1_700_000_000_000_000 + self.n as i64,
        }
    }
}
