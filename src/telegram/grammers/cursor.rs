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

/// Folds the states of one group of updates into `state`: per message box the highest pts
/// (a getDifference answer lists its other updates with their own, lower pts before its new
/// messages, which all carry the final state), and the latest date and seq that are set.
pub fn fold_group<'a>(state: &mut UpdatesState, group: impl IntoIterator<Item = &'a State>) {
    for s in group {
        if s.date > 0 {
            state.date = state.date.max(s.date);
        }
        if s.seq > 0 {
            state.seq = state.seq.max(s.seq);
        }
        match s.message_box {
            Some(MessageBox::Common { pts }) => state.pts = state.pts.max(pts),
            Some(MessageBox::Secondary { qts }) => state.qts = state.qts.max(qts),
            Some(MessageBox::Channel { channel_id, pts }) => {
                match state.channels.iter_mut().find(|c| c.id == channel_id) {
                    Some(channel) => channel.pts = channel.pts.max(pts),
                    None => state.channels.push(ChannelState {
                        id: channel_id,
                        pts,
                    }),
                }
            }
            None => {}
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

    #[test]
    fn a_difference_group_folds_to_its_final_state_whatever_the_order() {
        let mut state = UpdatesState {
            pts: 100,
            qts: 0,
            date: 10,
            seq: 1,
            channels: vec![],
        };
        // An edit listed with its own pts, then new messages carrying the answer's final state.
        let group = [
            st(20, 2, Some(MessageBox::Common { pts: 105 })),
            st(20, 2, Some(MessageBox::Common { pts: 110 })),
            st(20, 2, Some(MessageBox::Common { pts: 110 })),
            st(
                20,
                2,
                Some(MessageBox::Channel {
                    channel_id: 7,
                    pts: 3,
                }),
            ),
            st(0, 0, None),
        ];
        fold_group(&mut state, &group);
        assert_eq!(state.pts, 110);
        assert_eq!((state.date, state.seq), (20, 2));
        assert_eq!(state.channels, vec![ChannelState { id: 7, pts: 3 }]);
        // A later group never moves a box backwards.
        fold_group(
            &mut state,
            &[st(
                0,
                0,
                Some(MessageBox::Channel {
                    channel_id: 7,
                    pts: 2,
                }),
            )],
        );
        assert_eq!(state.channels, vec![ChannelState { id: 7, pts: 3 }]);
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
