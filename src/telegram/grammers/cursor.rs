//! The grammers account's resume point: Telegram's update state as of the last update whose
//! events are durable, the highest message id seen per chat, and the backfill still to do.
//!
//! Why not grammers' own `sync_update_state()`: it saves the message box as it stands *now*,
//! which already covers updates still queued in grammers' buffer or in our publish window. A
//! crash after such a save loses them. Instead every update grammers hands out carries the
//! state after it (`State`), and this module folds those states into an [`UpdatesState`] that
//! covers exactly what was handed out. The fold only ever advances per *group* — everything
//! grammers had ready at once, e.g. one getDifference answer, whose messages all carry the
//! answer's final state — so a cursor never claims part of a group.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use grammers_client::tl;
use grammers_session::types::{ChannelState, UpdatesState};
use grammers_session::updates::{MessageBox, State};
use serde::{Deserialize, Serialize};

use super::backfill::BackfillTask;
use crate::telegram::gateway::Cursor;

/// Prefix of a cursor written by this module (format 1).
const PREFIX: &str = "g1:";

/// Everything the grammers gateway needs to resume without loss.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrammersCursor {
    /// Telegram's update state covering every update handed out up to this cursor.
    pub state: UpdatesState,
    /// Highest message id seen per chat (marked chat id), to find holes and to keep a backfill
    /// from re-emitting what was already published.
    pub high_water: BTreeMap<String, i32>,
    /// History still to read, oldest task first.
    pub backfill: Vec<BackfillTask>,
    /// Whether the first-start backfill was planned (it is planned once per account).
    pub initial_backfill_planned: bool,
}

/// Why a stored cursor cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CursorError {
    #[error(
        "the stored source cursor is not a grammers cursor (it does not start with {PREFIX:?})"
    )]
    Foreign,
    #[error("the stored source cursor is damaged: {0}")]
    Damaged(String),
}

impl GrammersCursor {
    /// The opaque form stored in the event log's checkpoints.
    pub fn encode(&self) -> Cursor {
        // Encoding plain data structures cannot fail; an empty cursor would only re-deliver.
        let bytes = crate::codec::encode(self).unwrap_or_default();
        Cursor(format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes)))
    }

    /// Reads a cursor written by [`GrammersCursor::encode`].
    pub fn decode(cursor: &Cursor) -> Result<GrammersCursor, CursorError> {
        let body = cursor.0.strip_prefix(PREFIX).ok_or(CursorError::Foreign)?;
        let bytes = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|e| CursorError::Damaged(e.to_string()))?;
        crate::codec::decode(&bytes).map_err(|e| CursorError::Damaged(e.to_string()))
    }

    /// Records that a message of `chat` with `message_id` was handed out.
    pub fn saw_message(&mut self, chat: &str, message_id: i32) {
        let entry = self.high_water.entry(chat.to_string()).or_insert(0);
        *entry = (*entry).max(message_id);
    }
}

/// How a handed-out update relates to the update sequence of its message box.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// It carries its own pts and moves its box by `count` (a pushed update, or an edit or
    /// deletion listed in a difference answer).
    Own { count: i32 },
    /// A new message of a getDifference answer: its state is the answer's (final or
    /// intermediate) state, and the answer holds everything from where the box was.
    Difference,
    /// It carries a pts whose count this module does not know (no user-account update does).
    Unknown,
}

impl Link {
    /// The link of a raw update as grammers hands it out (the pts counts follow grammers'
    /// own `PtsInfo`, which is private to it).
    pub fn of(update: &tl::enums::Update) -> Link {
        use tl::enums::Update as U;
        let own = |pts: i32, count: i32| {
            if pts == 0 {
                Link::Difference
            } else {
                Link::Own { count }
            }
        };
        match update {
            U::NewMessage(u) => own(u.pts, u.pts_count),
            U::NewChannelMessage(u) => own(u.pts, u.pts_count),
            U::NewEncryptedMessage(u) => own(u.qts, 1),
            U::EditMessage(u) => own(u.pts, u.pts_count),
            U::EditChannelMessage(u) => own(u.pts, u.pts_count),
            U::DeleteMessages(u) => own(u.pts, u.pts_count),
            U::DeleteChannelMessages(u) => own(u.pts, u.pts_count),
            U::ReadHistoryInbox(u) => own(u.pts, u.pts_count),
            U::ReadHistoryOutbox(u) => own(u.pts, u.pts_count),
            U::ReadChannelInbox(u) => own(u.pts, 0),
            U::ReadMessagesContents(u) => own(u.pts, u.pts_count),
            U::WebPage(u) => own(u.pts, u.pts_count),
            U::ChannelWebPage(u) => own(u.pts, u.pts_count),
            U::FolderPeers(u) => own(u.pts, u.pts_count),
            U::PinnedMessages(u) => own(u.pts, u.pts_count),
            U::PinnedChannelMessages(u) => own(u.pts, u.pts_count),
            U::ChatParticipant(u) => own(u.qts, 1),
            U::ChannelParticipant(u) => own(u.qts, 1),
            _ => Link::Unknown,
        }
    }
}

/// Folds one group of handed-out updates into `state`, so that the state never claims an
/// update that was not handed out.
///
/// * An update with its own pts moves its box only when it follows on from the box
///   (`pts - count` is where the box stands). grammers hands out, unchecked, every update it
///   processes while it fetches that box's difference ("forcing update to apply"): the edits and
///   deletions listed in the answer, and pushes for a channel whose difference it cannot ask
///   for yet (no access hash). Taking the pts of such a push (420 while the box stood at 350)
///   would make a cursor that skips 351–419 if the process died before they arrived.
/// * A difference's new messages carry the answer's state, which covers everything from
///   where grammers' box stood; that is never behind this state, and everything up to it was
///   handed out, so the box moves to it.
/// * A box this state does not track yet (a channel first seen now) starts at the update's pts.
/// * Date and seq move only with an update that moved a box.
///
/// A box can lag behind grammers' (a difference with edits but no new message); a restart
/// then fetches a little again, which the dedupe stage drops.
pub fn fold_group<'a>(
    state: &mut UpdatesState,
    group: impl IntoIterator<Item = (&'a State, Link)>,
) {
    for (s, link) in group {
        let Some(message_box) = s.message_box else {
            continue;
        };
        let (current, pts) = match message_box {
            MessageBox::Common { pts } => (Some(&mut state.pts), pts),
            MessageBox::Secondary { qts } => (Some(&mut state.qts), qts),
            MessageBox::Channel { channel_id, pts } => (
                state
                    .channels
                    .iter_mut()
                    .find(|c| c.id == channel_id)
                    .map(|c| &mut c.pts),
                pts,
            ),
        };
        let moved = match (current, link) {
            (_, Link::Unknown) => false,
            (Some(current), Link::Own { count }) => {
                let follows = *current + count == pts;
                if follows {
                    *current = pts;
                }
                follows
            }
            (Some(current), Link::Difference) => {
                *current = (*current).max(pts);
                true
            }
            (None, _) => {
                if let MessageBox::Channel { channel_id, .. } = message_box {
                    state.channels.push(ChannelState {
                        id: channel_id,
                        pts,
                    });
                }
                true
            }
        };
        if moved {
            if s.date > 0 {
                state.date = state.date.max(s.date);
            }
            if s.seq > 0 {
                state.seq = state.seq.max(s.seq);
            }
        }
    }
}

/// The state to resume from when the session and the event log disagree: the cursor's state
/// wins for every box it knows (it is what was durable), and channels only the session knows
/// (joined while away, or first seen by a dialog scan) keep the session's pts.
pub fn merge_for_resume(durable: &UpdatesState, session: &UpdatesState) -> UpdatesState {
    let mut merged = durable.clone();
    for channel in &session.channels {
        if !merged.channels.iter().any(|c| c.id == channel.id) {
            merged.channels.push(channel.clone());
        }
    }
    if merged.pts == 0 {
        merged.pts = session.pts;
        merged.qts = session.qts;
        merged.date = session.date;
        merged.seq = session.seq;
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(date: i32, seq: i32, message_box: Option<MessageBox>) -> State {
        State {
            date,
            seq,
            message_box,
        }
    }

    fn common(pts: i32) -> Option<MessageBox> {
        Some(MessageBox::Common { pts })
    }

    fn state(pts: i32) -> UpdatesState {
        UpdatesState {
            pts,
            qts: 0,
            date: 10,
            seq: 1,
            channels: vec![],
        }
    }

    #[test]
    fn a_difference_group_folds_to_its_final_state_whatever_the_order() {
        let mut state = state(100);
        // An edit listed with its own pts, then new messages carrying the answer's final state.
        let group = [
            (st(20, 2, common(105)), Link::Own { count: 1 }),
            (st(20, 2, common(110)), Link::Difference),
            (st(20, 2, common(110)), Link::Difference),
            (
                st(
                    20,
                    2,
                    Some(MessageBox::Channel {
                        channel_id: 7,
                        pts: 3,
                    }),
                ),
                Link::Own { count: 1 },
            ),
            (st(0, 0, None), Link::Unknown),
        ];
        fold_group(&mut state, group.iter().map(|(s, l)| (s, *l)));
        assert_eq!(state.pts, 110);
        assert_eq!((state.date, state.seq), (20, 2));
        assert_eq!(state.channels, vec![ChannelState { id: 7, pts: 3 }]);
        // A later group never moves a box backwards.
        let older = st(
            0,
            0,
            Some(MessageBox::Channel {
                channel_id: 7,
                pts: 2,
            }),
        );
        fold_group(&mut state, [(&older, Link::Own { count: 1 })]);
        assert_eq!(state.channels, vec![ChannelState { id: 7, pts: 3 }]);
    }

    #[test]
    fn an_update_forced_through_while_a_difference_is_fetched_does_not_skip_the_gap() {
        let mut state = state(350);
        // Pushes that follow on move the box, one by one.
        let (p351, p352) = (st(11, 0, common(351)), st(11, 0, common(352)));
        fold_group(
            &mut state,
            [
                (&p351, Link::Own { count: 1 }),
                (&p352, Link::Own { count: 1 }),
            ],
        );
        assert_eq!(state.pts, 352);
        // 353 never came; grammers fetches the difference and meanwhile hands out 420.
        let forced = st(30, 0, common(420));
        fold_group(&mut state, [(&forced, Link::Own { count: 1 })]);
        assert_eq!(state.pts, 352, "a crash now must fetch 353 again");
        assert_eq!(state.date, 11, "the date does not move past the gap either");
        // The difference answer covers everything from 352.
        let answer = st(31, 0, common(421));
        fold_group(&mut state, [(&answer, Link::Difference)]);
        assert_eq!((state.pts, state.date), (421, 31));
        // A deletion of three messages follows on by its count; an unknown update never moves.
        let deletion = st(32, 0, common(424));
        let unknown = st(40, 0, common(425));
        fold_group(
            &mut state,
            [
                (&deletion, Link::Own { count: 3 }),
                (&unknown, Link::Unknown),
            ],
        );
        assert_eq!((state.pts, state.date), (424, 32));
    }

    #[test]
    fn cursors_round_trip_and_foreign_or_damaged_ones_are_named() {
        let mut cursor = GrammersCursor::default();
        cursor.state.pts = 42;
        cursor.saw_message("-1007", 9);
        cursor.saw_message("-1007", 3);
        let encoded = cursor.encode();
        assert_eq!(GrammersCursor::decode(&encoded).unwrap(), cursor);
        assert_eq!(cursor.high_water["-1007"], 9);
        assert!(matches!(
            GrammersCursor::decode(&Cursor("12:34".into())),
            Err(CursorError::Foreign)
        ));
        let mut damaged = encoded.0.clone();
        damaged.truncate(damaged.len() - 3);
        assert!(matches!(
            GrammersCursor::decode(&Cursor(damaged)),
            Err(CursorError::Damaged(_))
        ));
    }

    #[test]
    fn resume_keeps_durable_boxes_and_adds_channels_only_the_session_knows() {
        let durable = UpdatesState {
            pts: 50,
            qts: 1,
            date: 5,
            seq: 2,
            channels: vec![ChannelState { id: 1, pts: 10 }],
        };
        let session = UpdatesState {
            pts: 90,
            qts: 3,
            date: 9,
            seq: 4,
            channels: vec![
                ChannelState { id: 1, pts: 99 },
                ChannelState { id: 2, pts: 7 },
            ],
        };
        let merged = merge_for_resume(&durable, &session);
        assert_eq!(merged.pts, 50, "what was not durable is fetched again");
        assert_eq!(
            merged.channels,
            vec![
                ChannelState { id: 1, pts: 10 },
                ChannelState { id: 2, pts: 7 }
            ]
        );
    }
}
