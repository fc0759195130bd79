//! Per-account progress (last event, last checkpoint, events not yet checkpointed), written by the
//! account actors and read by the metrics poller.
//!
//! The actors only record timestamps here (one short lock per update); the poller derives the
//! gauges: aggregates always, per-account series only with `admin.per_account_metrics`, since
//! per-account labels do not scale to 10,000 accounts.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

/// What the poller knows about one account.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AccountProgress {
    /// When the account last produced an event (µs since the epoch).
    pub last_event_us: Option<i64>,
    /// When the account's checkpoint last advanced (µs since the epoch).
    pub last_checkpoint_us: Option<i64>,
    /// Events received since the last checkpoint.
    pub uncheckpointed: u64,
}

impl AccountProgress {
    /// Seconds since the last event, if there was one.
    pub fn last_event_age(&self, now_us: i64) -> Option<f64> {
        self.last_event_us
            .map(|t| (now_us.saturating_sub(t)).max(0) as f64 / 1e6)
    }

    /// Seconds the checkpoint trails the newest event: 0 when every event is checkpointed,
    /// otherwise the time since the checkpoint last advanced (or since the first event).
    pub fn checkpoint_lag(&self, now_us: i64) -> f64 {
        if self.uncheckpointed == 0 {
            return 0.0;
        }
        let since = self
            .last_checkpoint_us
            .or(self.last_event_us)
            .unwrap_or(now_us);
        (now_us.saturating_sub(since)).max(0) as f64 / 1e6
    }
}

fn table() -> &'static Mutex<HashMap<String, AccountProgress>> {
    static TABLE: OnceLock<Mutex<HashMap<String, AccountProgress>>> = OnceLock::new();
    TABLE.get_or_init(Mutex::default)
}

fn update(account_id: &str, f: impl FnOnce(&mut AccountProgress)) {
    let mut t = table()
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    f(t.entry(account_id.to_string()).or_default());
}

/// Records `events` new events of `account_id` at `now_us`.
pub fn record_events(account_id: &str, events: u64, now_us: i64) {
    update(account_id, |p| {
        p.last_event_us = Some(now_us);
        p.uncheckpointed += events;
    });
}

/// Records that `account_id`'s checkpoint advanced at `now_us`; `remaining` events received so
/// far are still not covered by it.
pub fn record_checkpoint(account_id: &str, now_us: i64, remaining: u64) {
    update(account_id, |p| {
        p.last_checkpoint_us = Some(now_us);
        p.uncheckpointed = remaining;
    });
}

/// Forgets `account_id` (its actor stopped for good or the account was removed).
pub fn forget(account_id: &str) {
    table()
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .remove(account_id);
}

/// A copy of every account's progress.
pub fn snapshot() -> Vec<(String, AccountProgress)> {
    table()
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .iter()
        .map(|(k, v)| (k.clone(), *v))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoint_lag_is_zero_once_everything_is_checkpointed() {
        let mut p = AccountProgress::default();
        assert_eq!(p.checkpoint_lag(10_000_000), 0.0);
        p.last_event_us = Some(2_000_000);
        p.uncheckpointed = 3;
        assert_eq!(p.checkpoint_lag(5_000_000), 3.0);
        p.last_checkpoint_us = Some(4_000_000);
        assert_eq!(p.checkpoint_lag(5_000_000), 1.0);
        p.uncheckpointed = 0;
        assert_eq!(p.checkpoint_lag(5_000_000), 0.0);
        assert_eq!(p.last_event_age(5_000_000), Some(3.0));
    }
}
