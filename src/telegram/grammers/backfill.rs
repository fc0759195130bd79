//! Reading history: the last `backfill_window_h` hours of every dialog on first start, and the
//! missing range of a chat after a detected hole.
//!
//! A task names a chat and a half-open id range `(after_id, upto_id]`. It first *locates* its
//! lower bound (the newest message before the window, or the `max_per_chat`-th newest message,
//! whichever is later), then pages upwards, oldest first. Tasks live in the cursor, so a backfill
//! resumes where the last durable page ended. Pacing is the gateway's job (one request per
//! `backfill_pace`).

use grammers_client::Client;
use grammers_client::tl;
use grammers_session::types::PeerRef;
use serde::{Deserialize, Serialize};

use crate::event::Event;
use crate::telegram::gateway::GatewayError;
use crate::telegram::normalize::{MessageIndex, NormalizeContext, normalize_message};

/// Messages read per history request (Telegram's maximum is 100).
pub const PAGE: usize = 100;

/// Why a chat is being backfilled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BackfillReason {
    /// The account's first start: the configured window of every dialog.
    Initial,
    /// The chat's newest message is past what arrived (e.g. a skipped `differenceTooLong`).
    Hole,
}

/// The lower bound still to find before paging.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Locate {
    /// Only messages sent at or after this unix time.
    pub since_date: i32,
    /// At most this many of the newest messages.
    pub max_messages: u32,
}

/// One chat's history still to read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackfillTask {
    /// Marked chat id.
    pub chat_id: String,
    /// Messages with ids above this are read (exclusive).
    pub after_id: i32,
    /// ... up to and including this one (the chat's newest when the task was planned).
    pub upto_id: i32,
    /// Set until the lower bound has been found.
    pub locate: Option<Locate>,
    pub reason: BackfillReason,
}

/// What one step of a task produced.
#[derive(Debug)]
pub struct StepResult {
    pub events: Vec<Event>,
    /// The task as it stands after the step; `None` when it is finished.
    pub task: Option<BackfillTask>,
}

/// Does one request's worth of `task` for the chat behind `peer`.
pub async fn step(
    client: &Client,
    peer: PeerRef,
    task: &BackfillTask,
    ctx: &NormalizeContext,
    index: &mut MessageIndex,
) -> Result<StepResult, GatewayError> {
    if let Some(locate) = task.locate {
        let after_id = locate_lower_bound(client, peer, locate).await?;
        let mut next = task.clone();
        next.after_id = next.after_id.max(after_id);
        next.locate = None;
        let finished = next.after_id >= next.upto_id;
        return Ok(StepResult {
            events: Vec::new(),
            task: (!finished).then_some(next),
        });
    }

    let mut iter = client
        .iter_messages(peer)
        .offset_id(task.after_id)
        .reverse(true)
        .limit(PAGE);
    let mut events = Vec::new();
    let mut highest = task.after_id;
    let mut read = 0usize;
    while let Some(message) = iter
        .next()
        .await
        .map_err(|e| super::errors::gateway_error(&e))?
    {
        read += 1;
        let id = message.id();
        if id <= task.after_id {
            continue;
        }
        highest = highest.max(id);
        if id > task.upto_id {
            continue;
        }
        events.extend(normalize_message(&message, false, ctx, index));
    }
    // Not `read < PAGE`: grammers' first upward page from the start of a chat holds one less.
    let finished = read == 0 || highest >= task.upto_id;
    let mut next = task.clone();
    next.after_id = highest;
    Ok(StepResult {
        events,
        task: (!finished).then_some(next),
    })
}

/// The id below the first message to read: the newest message sent before the window, or the
/// one below the `max_messages`-th newest, whichever is later; 0 when the chat is shorter.
async fn locate_lower_bound(
    client: &Client,
    peer: PeerRef,
    locate: Locate,
) -> Result<i32, GatewayError> {
    let mut before_window = client
        .iter_messages(peer)
        .offset_date(locate.since_date)
        .limit(1);
    let by_date = before_window
        .next()
        .await
        .map_err(|e| super::errors::gateway_error(&e))?
        .map_or(0, |m| m.id());

    let add_offset = i32::try_from(locate.max_messages.saturating_sub(1)).unwrap_or(i32::MAX);
    let request = tl::functions::messages::GetHistory {
        peer: peer.into(),
        offset_id: 0,
        offset_date: 0,
        add_offset,
        limit: 1,
        max_id: 0,
        min_id: 0,
        hash: 0,
    };
    let oldest_allowed = match client
        .invoke(&request)
        .await
        .map_err(|e| super::errors::gateway_error(&e))?
    {
        tl::enums::messages::Messages::Messages(m) => first_id(&m.messages),
        tl::enums::messages::Messages::Slice(m) => first_id(&m.messages),
        tl::enums::messages::Messages::ChannelMessages(m) => first_id(&m.messages),
        tl::enums::messages::Messages::NotModified(_) => None,
    };
    Ok(by_date.max(oldest_allowed.map_or(0, |id| id - 1)))
}

fn first_id(messages: &[tl::enums::Message]) -> Option<i32> {
    messages.first().map(|m| match m {
        tl::enums::Message::Empty(e) => e.id,
        tl::enums::Message::Message(m) => m.id,
        tl::enums::Message::Service(m) => m.id,
    })
}
