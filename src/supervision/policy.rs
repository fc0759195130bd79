//! The pure part of supervision: how often a child may be restarted and how long to wait
//! before each restart. No actors, no clocks of its own: callers pass `Instant`s and an RNG,
//! so every rule here is unit-testable without timing.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use rand::Rng;

/// How often a supervisor may restart one child, and how long it waits before each restart.
#[derive(Debug, Clone, PartialEq)]
pub struct RestartPolicy {
    /// Restarts allowed per child within `window`; one more escalates to the supervisor's parent.
    pub max_restarts: u32,
    /// The sliding window over which restarts are counted; older restarts are forgotten.
    pub window: Duration,
    /// Delay before the first restart within the window; it doubles with each further restart.
    pub backoff_initial: Duration,
    /// Upper bound for the delay, jitter included.
    pub backoff_max: Duration,
    /// Relative jitter in `0.0..=1.0`: a delay `d` becomes a uniform draw from `d·(1±jitter)`.
    pub jitter: f64,
}

impl Default for RestartPolicy {
    /// 5 restarts in 60 s, backoff 1 s doubling up to 10 min, ±20 % jitter.
    fn default() -> Self {
        Self {
            max_restarts: 5,
            window: Duration::from_secs(60),
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(600),
            jitter: 0.2,
        }
    }
}

/// The delay before restart number `attempt` (1-based; 0 is treated as 1):
/// `backoff_initial · 2^(attempt-1)`, capped at `backoff_max`, then ± `jitter`, never above
/// `backoff_max`. Total: out-of-range inputs (NaN or negative jitter, overflow) never panic.
pub fn backoff_delay(policy: &RestartPolicy, attempt: u32, rng: &mut impl Rng) -> Duration {
    let max = policy.backoff_max;
    let exponent = attempt.saturating_sub(1);
    let base = 1u32
        .checked_shl(exponent)
        .and_then(|factor| policy.backoff_initial.checked_mul(factor))
        .map_or(max, |delay| delay.min(max));

    let jitter = if policy.jitter.is_finite() {
        policy.jitter.clamp(0.0, 1.0)
    } else {
        0.0
    };
    if jitter == 0.0 || base.is_zero() {
        return base;
    }
    let factor = 1.0 + rng.random_range(-jitter..=jitter);
    // `factor` is in 0.0..=2.0, so the product is finite and non-negative; `try_from` still
    // guards against a `Duration` overflow for absurdly large maxima.
    Duration::try_from_secs_f64(base.as_secs_f64() * factor).map_or(max, |delay| delay.min(max))
}

/// The timestamps of one child's recent restarts: the intensity half of a [`RestartPolicy`].
#[derive(Debug, Clone, Default)]
pub struct RestartLog {
    restarts: VecDeque<Instant>,
}

impl RestartLog {
    /// An empty log.
    pub fn new() -> Self {
        Self::default()
    }

    /// Forgets restarts that are `window` or more older than `now`, then records a restart at
    /// `now` if the policy allows one. Returns the restart's attempt number within the window
    /// (1-based, the input for [`backoff_delay`]), or `Err(n)` with the `n` restarts already in
    /// the window when one more would exceed `max_restarts`.
    pub fn try_record(&mut self, now: Instant, policy: &RestartPolicy) -> Result<u32, u32> {
        self.forget_before(now, policy.window);
        let in_window = self.in_window();
        if in_window >= policy.max_restarts {
            return Err(in_window);
        }
        self.restarts.push_back(now);
        Ok(in_window.saturating_add(1))
    }

    /// The number of restarts currently remembered (call after `try_record` for an exact count).
    pub fn in_window(&self) -> u32 {
        u32::try_from(self.restarts.len()).unwrap_or(u32::MAX)
    }

    fn forget_before(&mut self, now: Instant, window: Duration) {
        // Restarts are pushed in time order, so the old ones are at the front.
        while let Some(oldest) = self.restarts.front() {
            if now.saturating_duration_since(*oldest) >= window {
                self.restarts.pop_front();
            } else {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(max_restarts: u32, window_ms: u64) -> RestartPolicy {
        RestartPolicy {
            max_restarts,
            window: Duration::from_millis(window_ms),
            ..RestartPolicy::default()
        }
    }

    #[test]
    fn restarts_within_the_window_are_numbered_and_limited() {
        let p = policy(3, 1000);
        let t0 = Instant::now();
        let mut log = RestartLog::new();
        assert_eq!(log.try_record(t0, &p), Ok(1));
        assert_eq!(log.try_record(t0 + Duration::from_millis(10), &p), Ok(2));
        assert_eq!(log.try_record(t0 + Duration::from_millis(20), &p), Ok(3));
        assert_eq!(log.try_record(t0 + Duration::from_millis(30), &p), Err(3));
        // A refused restart is not recorded.
        assert_eq!(log.in_window(), 3);
    }

    #[test]
    fn restarts_older_than_the_window_are_forgotten() {
        let p = policy(2, 100);
        let t0 = Instant::now();
        let mut log = RestartLog::new();
        assert_eq!(log.try_record(t0, &p), Ok(1));
        assert_eq!(log.try_record(t0 + Duration::from_millis(50), &p), Ok(2));
        // At t0+100 the first restart leaves the window, the second stays.
        assert_eq!(log.try_record(t0 + Duration::from_millis(100), &p), Ok(2));
        assert_eq!(log.try_record(t0 + Duration::from_millis(120), &p), Err(2));
        // Long after, everything is forgotten and numbering starts again.
        assert_eq!(log.try_record(t0 + Duration::from_secs(10), &p), Ok(1));
    }

    #[test]
    fn zero_max_restarts_refuses_every_restart() {
        let p = policy(0, 1000);
        assert_eq!(RestartLog::new().try_record(Instant::now(), &p), Err(0));
    }
}
