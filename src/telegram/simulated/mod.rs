//! A deterministic simulated Telegram, for demos, tests and load.
//!
//! Why it exists: the pipeline behind the account actor (bus, dedupe, scope filter, redaction,
//! delivery, event log) must be exercised end to end, repeatably and at scale, without Telegram.
//! The simulator produces, for any number of accounts, a stream of realistic events — every chat
//! kind (private chats, basic groups, supergroups, a forum with topics, a broadcast channel and
//! Telegram's service chat 777000 with login codes), outgoing messages, replies, media, edits,
//! deletions, service messages, re-deliveries and embedded personal data — and knows the ground
//! truth: what a loss-free, duplicate-free pipeline must deliver ([`SimulatedWorld::expected`]).
//!
//! Everything is a pure function of (seed, account index, position) — see [`world`] for how the
//! positions are laid out so that Telegram's message-id counters need no replay. Nothing is
//! precomputed per account, so ten thousand idle accounts cost a few hundred bytes each.
//!
//! What it does not model: MTProto itself, update sequences (`pts`/`qts`/`seq`) and their gaps,
//! `differenceTooLong`, access hashes, logins and 2FA, flood waits that follow from request rates
//! (they are injected: [`SimulatorFaults`]), chats shared between accounts, and history that
//! reflects later edits and deletions. The fake Telegram DC covers the protocol-level behaviour.

mod gateway;
mod text;
pub mod world;

use serde::{Deserialize, Serialize};

use crate::config::ConfigError;

pub use gateway::{
    CATCH_UP_POSITIONS, CallRecord, Fault, FaultCall, SimulatedFactory, SimulatedGateway,
    SimulatorFaults,
};
pub use text::{Pii, PiiKind, iban_mod97, luhn_valid};
pub use world::{ChatRole, PositionEvents, PositionKind, SimChat, SimulatedWorld};

/// The simulated source: how many accounts, how fast, and what their streams contain.
///
/// Rates are fractions of stream positions (0 to 1); the block layout rounds them to multiples of
/// 1/1024. Section `[simulator]` of the config file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SimulatorConfig {
    /// Number of simulated accounts (user ids 1000000, 1000001, …); 0 = the simulator is off.
    pub accounts: u32,
    /// Stream positions (updates) per second per account, on average (bursts included).
    pub rate: f64,
    /// Positions per account before the stream ends; 0 = unbounded.
    pub messages_per_account: u64,
    /// Seed of the world: the same seed gives the same events, byte for byte.
    pub seed: u64,
    /// Chats per account, from 6 (one of each kind) to 64.
    pub chats_per_account: u32,
    /// Share of positions that re-deliver an earlier position's events (same `event_id`).
    pub duplicate_rate: f64,
    /// Share of positions that edit an earlier message.
    pub edit_rate: f64,
    /// Share of positions that delete earlier messages.
    pub delete_rate: f64,
    /// Share of positions that are service messages (joins, pins, title changes…).
    pub service_rate: f64,
    /// Share of messages that carry media (with a caption or none).
    pub media_rate: f64,
    /// Share of message texts that embed personal data (e-mail, phone, card, IBAN, API token);
    /// every message of chat 777000 carries a login code regardless.
    pub pii_rate: f64,
    /// Every this many positions a burst arrives; 0 = no bursts, an even pace.
    pub burst_every: u64,
    /// Positions that arrive at once at the start of each burst cycle (1 to `burst_every`).
    pub burst_size: u64,
}

impl Default for SimulatorConfig {
    fn default() -> Self {
        SimulatorConfig {
            accounts: 0,
            rate: 1.0,
            messages_per_account: 0,
            seed: 1,
            chats_per_account: 12,
            duplicate_rate: 0.02,
            edit_rate: 0.05,
            delete_rate: 0.02,
            service_rate: 0.03,
            media_rate: 0.15,
            pii_rate: 0.05,
            burst_every: 0,
            burst_size: 20,
        }
    }
}

/// Highest number of simulated accounts.
pub const MAX_ACCOUNTS: u32 = 1_000_000;
/// Highest per-account rate (positions per second).
pub const MAX_RATE: f64 = 100_000.0;
/// Highest value of each of the duplicate, edit, delete and service rates.
pub const MAX_STRUCTURAL_RATE: f64 = 0.25;
/// Highest sum of the duplicate, edit, delete and service rates.
pub const MAX_STRUCTURAL_SUM: f64 = 0.5;

fn invalid(key: &str, value: impl std::fmt::Debug, allowed: impl Into<String>) -> ConfigError {
    crate::config::invalid(&format!("simulator.{key}"), value, allowed)
}

impl SimulatorConfig {
    /// Checks every rule beyond the types; errors name the key (`simulator.rate`, …).
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.accounts > MAX_ACCOUNTS {
            return Err(invalid(
                "accounts",
                self.accounts,
                format!("0 (off) to {MAX_ACCOUNTS}"),
            ));
        }
        if !(self.rate.is_finite() && self.rate > 0.0 && self.rate <= MAX_RATE) {
            return Err(invalid(
                "rate",
                self.rate,
                format!("positions per second per account, above 0 and at most {MAX_RATE}"),
            ));
        }
        if !(6..=64).contains(&self.chats_per_account) {
            return Err(invalid(
                "chats_per_account",
                self.chats_per_account,
                "6 (one chat of each kind) to 64",
            ));
        }
        let structural = [
            ("duplicate_rate", self.duplicate_rate),
            ("edit_rate", self.edit_rate),
            ("delete_rate", self.delete_rate),
            ("service_rate", self.service_rate),
        ];
        for (key, value) in structural {
            if !(0.0..=MAX_STRUCTURAL_RATE).contains(&value) {
                return Err(invalid(
                    key,
                    value,
                    format!("a share of positions from 0 to {MAX_STRUCTURAL_RATE}"),
                ));
            }
        }
        let sum: f64 = structural.iter().map(|(_, v)| v).sum();
        if sum > MAX_STRUCTURAL_SUM {
            let (key, value) =
                structural
                    .iter()
                    .copied()
                    .fold(
                        ("duplicate_rate", f64::MIN),
                        |a, b| if b.1 > a.1 { b } else { a },
                    );
            return Err(invalid(
                key,
                value,
                format!(
                    "duplicate_rate + edit_rate + delete_rate + service_rate must be at most {MAX_STRUCTURAL_SUM} (now {sum})"
                ),
            ));
        }
        for (key, value) in [("media_rate", self.media_rate), ("pii_rate", self.pii_rate)] {
            if !(0.0..=1.0).contains(&value) {
                return Err(invalid(key, value, "a share from 0 to 1"));
            }
        }
        if self.burst_every > 0 && !(1..=self.burst_every).contains(&self.burst_size) {
            return Err(invalid(
                "burst_size",
                self.burst_size,
                format!("1 to burst_every ({}) when bursts are on", self.burst_every),
            ));
        }
        Ok(())
    }
}
