//! Everything that talks to Telegram, or stands in for it.
//!
//! The account actor sees Telegram only through the [`gateway::Gateway`] trait, so the
//! simulated source (for demos, tests and load) and the grammers adapter (real accounts) are
//! interchangeable.

pub mod fakedc;
pub mod gateway;
pub mod grammers;
pub mod normalize;
pub mod route;
pub mod session;
pub mod simulated;
