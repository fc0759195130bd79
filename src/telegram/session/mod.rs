//! Telegram sessions: what the grammers adapter persists, sealed at rest, and imported from the
//! string sessions Telethon and Pyrogram write.
//!
//! A session holds the account's auth key, so it never leaves this module unsealed: the store
//! writes only [`seal`]ed bytes (XChaCha20-Poly1305 under a per-account key derived from the master
//! key), and `Debug` on every type here shows which DCs hold a key, never the key. At run time
//! grammers works on a [`SealedSession`]: the state in memory, saved sealed by a debounced writer.

mod import;
mod live;
mod seal;
mod snapshot;
mod store;

pub use import::{ImportError, import_pyrogram, import_telethon};
pub use live::{
    LiveSessionError, LiveSessionOptions, LiveSessionStatus, METRIC_SESSION_WRITE_ERRORS,
    METRIC_SESSION_WRITES, SealedSession, custom_dc_option,
};
pub use seal::{SEAL_FORMAT_V1, SessionError, seal, seal_snapshot, unseal, unseal_snapshot};
pub use snapshot::SessionSnapshot;
pub use store::{RotateReport, SessionStore, StoreError};
