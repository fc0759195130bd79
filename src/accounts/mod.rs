//! Accounts as operators see them: their lifecycle states, the registry of which accounts exist
//! and may ingest, logins and consent.
//!
//! - [`registry`]: the `TG_ACCOUNTS` KV bucket, one record per account.
//! - [`login`]: interactive logins behind the [`login::LoginBackend`] trait, each in an actor.
//! - [`budget`]: the local, persisted login budget per phone number.
//! - [`control`]: [`AccountsControl`], what the admin API calls; keeps registry, sessions and
//!   running account actors in step, and audits every action.
//! - [`client`]: `tgingest accounts …`, a thin client of the admin API.

pub mod budget;
pub mod client;
pub mod control;
pub mod lifecycle;
pub mod login;
pub mod registry;

pub use control::{AccountView, AccountsControl, ControlError, ControlParts, ImportFormat};
pub use lifecycle::Lifecycle;
