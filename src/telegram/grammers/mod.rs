//! The grammers adapter: real Telegram accounts behind the [`super::gateway::Gateway`] trait.
//!
//! [`gateway::GrammersGateway`] drives one account's `SenderPool` and update stream;
//! [`cursor`] says what is safe to resume from; [`backfill`] reads history.

pub mod backfill;
pub mod cursor;
pub mod errors;
pub mod gateway;

pub use errors::{FloodWaitPolicy, gateway_error};
