//! The single-owner oracle: for every auth key, which MTProto session sent each request, in the
//! order the DC received them — what Telegram sees when one session string runs in two places.
//!
//! An **overlap** is a request from an older session after the first request of a newer one on
//! the same key: the old owner kept talking after the new one started. Telegram answers that
//! with `AUTH_KEY_DUPLICATED` and may revoke the key for good; the fake DC answers the RPC the
//! same way and records it. A **hand-over** is a newer session's first request, with the gap
//! since the previous session's last one (how long the account was silent while it moved).
//!
//! Sessions are told apart by MTProto `session_id` (grammers picks a random one per connection,
//! so a reconnect of one client is a new session too; its old connection is gone by then, so it
//! cannot overlap). What it does not see: requests that never reach the DC (a socket the kernel
//! still buffers when the DC is gone), and it judges by arrival order, not by send time.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

/// An older session talking after a newer one started on the same key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overlap {
    /// The account (user id) the key belongs to.
    pub user: i64,
    pub old_session: i64,
    pub new_session: i64,
    /// How long after the newer session's first request this one arrived.
    pub after_new_started: Duration,
}

/// A newer session's first request on a key that had an older one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handover {
    pub user: i64,
    pub from_session: i64,
    pub to_session: i64,
    /// From the older session's last request to the newer one's first.
    pub gap: Duration,
}

struct SessionUse {
    session_id: i64,
    last: Instant,
    first: Instant,
}

/// Every session seen per auth key, oldest first, and what was observed between them.
#[derive(Default)]
pub(crate) struct SessionLog {
    keys: HashMap<[u8; 8], Vec<SessionUse>>,
    overlaps: Vec<Overlap>,
    handovers: Vec<Handover>,
}

impl SessionLog {
    /// Records one request of `session_id` on `key`; true when it is an overlap.
    pub(crate) fn record(
        &mut self,
        key: [u8; 8],
        user: i64,
        session_id: i64,
        now: Instant,
    ) -> bool {
        let sessions = self.keys.entry(key).or_default();
        let Some(i) = sessions.iter().position(|s| s.session_id == session_id) else {
            if let Some(previous) = sessions.last() {
                self.handovers.push(Handover {
                    user,
                    from_session: previous.session_id,
                    to_session: session_id,
                    gap: now.saturating_duration_since(previous.last),
                });
            }
            sessions.push(SessionUse {
                session_id,
                first: now,
                last: now,
            });
            return false;
        };
        sessions[i].last = now;
        let Some(newest) = sessions[i + 1..].last() else {
            return false;
        };
        self.overlaps.push(Overlap {
            user,
            old_session: session_id,
            new_session: newest.session_id,
            after_new_started: now.saturating_duration_since(newest.first),
        });
        true
    }

    pub(crate) fn overlaps(&self) -> Vec<Overlap> {
        self.overlaps.clone()
    }

    pub(crate) fn handovers(&self) -> Vec<Handover> {
        self.handovers.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; 8] = [1; 8];

    #[test]
    fn a_clean_hand_over_is_no_overlap_and_its_gap_is_measured() {
        let mut log = SessionLog::default();
        let t0 = Instant::now();
        assert!(!log.record(KEY, 7, 100, t0));
        assert!(!log.record(KEY, 7, 100, t0 + Duration::from_secs(1)));
        assert!(!log.record(KEY, 7, 200, t0 + Duration::from_secs(4)));
        assert!(!log.record(KEY, 7, 200, t0 + Duration::from_secs(5)));
        assert!(log.overlaps().is_empty());
        assert_eq!(
            log.handovers(),
            [Handover {
                user: 7,
                from_session: 100,
                to_session: 200,
                gap: Duration::from_secs(3)
            }]
        );
    }

    #[test]
    fn an_old_session_talking_after_a_new_one_started_is_an_overlap() {
        let mut log = SessionLog::default();
        let t0 = Instant::now();
        log.record(KEY, 7, 100, t0);
        log.record(KEY, 7, 200, t0 + Duration::from_secs(2));
        assert!(log.record(KEY, 7, 100, t0 + Duration::from_secs(3)));
        assert_eq!(log.overlaps()[0].after_new_started, Duration::from_secs(1));
        // Other keys are other accounts: no overlap between them.
        assert!(!log.record([2; 8], 8, 100, t0 + Duration::from_secs(3)));
        assert_eq!(log.overlaps().len(), 1);
    }
}
