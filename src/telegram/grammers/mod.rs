//! The grammers adapter: real Telegram accounts behind the [`super::gateway::Gateway`] trait.

pub mod errors;

pub use errors::{FloodWaitPolicy, gateway_error};
