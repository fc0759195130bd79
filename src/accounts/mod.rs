//! Accounts as operators see them: their lifecycle states, the registry of which accounts exist
//! and may ingest, logins and consent.

pub mod lifecycle;

pub use lifecycle::Lifecycle;
