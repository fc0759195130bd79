//! The states an account goes through, shared by the account actor (which reports them), the
//! accounts registry and CLI (which show them) and the metrics (which count them).
//!
//! `pending_consent → connecting → (awaiting_code | awaiting_password) → catching_up → running`,
//! with the side states `flood_wait(until)`, `revoked`, `duplicated`, `paused` and `stopped`.
//! `revoked` and `duplicated` are terminal: only an operator (a new login or import) ends them.

use serde::{Deserialize, Serialize};

/// Where one account stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Lifecycle {
    /// Has a session but no consent record in the audit log yet; does not ingest.
    PendingConsent,
    /// Connecting to Telegram with its stored session.
    Connecting,
    /// A login is under way and waits for the code Telegram sent.
    AwaitingCode,
    /// A login is under way and waits for the 2FA password.
    AwaitingPassword { hint: Option<String> },
    /// Fetching what happened while it was away (getDifference) or backfilling history.
    CatchingUp,
    /// Live.
    Running,
    /// Parked by a long FLOOD_WAIT until this time (microseconds since the epoch).
    FloodWait { until_us: i64 },
    /// The session is gone (AUTH_KEY_UNREGISTERED, SESSION_REVOKED, USER_DEACTIVATED). Terminal.
    Revoked { reason: String },
    /// The auth key was used from two places at once (AUTH_KEY_DUPLICATED). Terminal.
    Duplicated,
    /// Paused by an operator; resumes only when told to.
    Paused,
    /// Not running (removed, or the node is stopping).
    Stopped,
}

impl Lifecycle {
    /// The state's name, as shown in `accounts list` and used as the metric label.
    pub fn name(&self) -> &'static str {
        match self {
            Lifecycle::PendingConsent => "pending_consent",
            Lifecycle::Connecting => "connecting",
            Lifecycle::AwaitingCode => "awaiting_code",
            Lifecycle::AwaitingPassword { .. } => "awaiting_password",
            Lifecycle::CatchingUp => "catching_up",
            Lifecycle::Running => "running",
            Lifecycle::FloodWait { .. } => "flood_wait",
            Lifecycle::Revoked { .. } => "revoked",
            Lifecycle::Duplicated => "duplicated",
            Lifecycle::Paused => "paused",
            Lifecycle::Stopped => "stopped",
        }
    }

    /// Every state name, for metrics that must report zeros too.
    pub const NAMES: [&'static str; 11] = [
        "pending_consent",
        "connecting",
        "awaiting_code",
        "awaiting_password",
        "catching_up",
        "running",
        "flood_wait",
        "revoked",
        "duplicated",
        "paused",
        "stopped",
    ];

    /// States a restart cannot leave: the supervisor must not restart the account.
    pub fn is_terminal(&self) -> bool {
        matches!(self, Lifecycle::Revoked { .. } | Lifecycle::Duplicated)
    }
}

/// One value of every state, in [`Lifecycle::NAMES`] order (for tests that cover them all).
#[cfg(test)]
pub(crate) fn one_of_each() -> [Lifecycle; 11] {
    [
        Lifecycle::PendingConsent,
        Lifecycle::Connecting,
        Lifecycle::AwaitingCode,
        Lifecycle::AwaitingPassword { hint: None },
        Lifecycle::CatchingUp,
        Lifecycle::Running,
        Lifecycle::FloodWait { until_us: 0 },
        Lifecycle::Revoked {
            reason: String::new(),
        },
        Lifecycle::Duplicated,
        Lifecycle::Paused,
        Lifecycle::Stopped,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_listed_once_each_and_match() {
        let names: Vec<&str> = one_of_each().iter().map(Lifecycle::name).collect();
        assert_eq!(names, Lifecycle::NAMES);
        let json = serde_json::to_string(&Lifecycle::FloodWait { until_us: 5 }).unwrap();
        assert_eq!(json, r#"{"state":"flood_wait","until_us":5}"#);
    }
}
