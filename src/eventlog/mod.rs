//! The append-only, blake3-chained audit and checkpoint log over sled.
//!
//! Why it exists: auditors must be able to trust the record of what tgingest did, so every record
//! carries a keyed hash over its content and its predecessor's hash. Any changed byte, deleted,
//! reordered or truncated record is then caught by [`EventLog::verify`], and a log rewritten from
//! scratch is caught against an [`Anchor`] kept in another trust domain (JetStream). The same log
//! holds checkpoints (how far each upstream source was consumed): upstream steps such as acking a
//! message depend on them, so [`EventLog::checkpoint`] returns only once the record is on disk.
//!
//! Layout: sled trees `log` (seq, big-endian → encoded [`Record`]), `meta` (the head, written in
//! the same transaction as each record, so a truncated `log` tree shows) and `checkpoint_index`
//! (account NUL scope → seq of the newest checkpoint, derived state that can be rebuilt). Beside
//! them, `chain.key` holds the random chain key sealed under the master key ([`ChainKey`]), so the
//! master key can be rotated without making the log unverifiable.

mod audit;
mod chain_key;
mod checkpoint;
mod error;
mod record;
mod store;
mod verify;

pub use audit::AuditEntry;
pub use chain_key::{CHAIN_KEY_FILE, ChainKey, ChainKeyOrigin, SealedUnder, chain_key_path};
pub use checkpoint::Checkpoint;
pub use error::EventLogError;
pub use record::{Anchor, Record, RecordKind, ZERO_HASH, chain_hash};
pub use store::{Durability, EventLog, EventLogOptions, verify_dir, verify_dir_against};
pub use verify::{VerifyReport, verify_copy, verify_entries};

/// Counter of appended records, labelled `kind="audit"|"checkpoint"`.
pub const METRIC_APPENDS_TOTAL: &str = "tgingest_eventlog_appends_total";
/// Histogram of how long flushing to disk took, in seconds.
pub use crate::observability::METRIC_FLUSH_SECONDS;
/// Gauge set by every verification: 1 when the log verified, 0 when it did not.
pub const METRIC_VERIFY_OK: &str = "tgingest_eventlog_verify_ok";
/// Gauge of the seq of the newest record.
pub const METRIC_HEAD_SEQ: &str = "tgingest_eventlog_head_seq";
