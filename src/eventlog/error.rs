//! What can go wrong with the event log, saying on which directory or record.

use std::path::PathBuf;

use crate::codec::CodecError;

/// Why an event log operation failed.
#[derive(Debug, thiserror::Error)]
pub enum EventLogError {
    /// sled's file lock is held: another process (or another `EventLog` here) has the directory open.
    #[error(
        "event log at {} is in use by another process; stop it, or point this one at another data dir",
        dir.display()
    )]
    InUse { dir: PathBuf },
    /// The directory could not be opened as a sled database.
    #[error("cannot open event log at {}: {source}", dir.display())]
    Open { dir: PathBuf, source: sled::Error },
    /// `verify_dir` found no log where one was expected.
    #[error("no event log at {}: {problem}", dir.display())]
    NotFound { dir: PathBuf, problem: String },
    /// The head in meta and the last record disagree, so appending would extend a broken chain.
    #[error(
        "event log at {} is inconsistent: the head in meta says seq {head_seq}, the log ends at seq \
         {last_seq}; run `tgingest audit verify` and keep the directory for inspection",
        dir.display()
    )]
    Inconsistent {
        dir: PathBuf,
        head_seq: u64,
        last_seq: u64,
    },
    /// The head stored in meta cannot be read.
    #[error("the head in meta of event log at {} does not decode: {source}", dir.display())]
    BadHead { dir: PathBuf, source: CodecError },
    /// A sled read or write failed.
    #[error("event log at {}: sled failed while {doing}: {source}", dir.display())]
    Storage {
        dir: PathBuf,
        doing: &'static str,
        source: sled::Error,
    },
    /// Flushing to disk failed, so the records since the last flush may not be durable.
    #[error("cannot flush event log at {} to disk: {source}", dir.display())]
    Flush { dir: PathBuf, source: sled::Error },
    /// The flush task died (panicked or was cancelled at runtime shutdown) before finishing.
    #[error("flushing event log at {} did not finish: the flush task was aborted", dir.display())]
    FlushAborted { dir: PathBuf },
    /// A value could not be encoded (for example a body over the codec's size limit).
    #[error("cannot encode {what} for record {seq}: {source}")]
    Encode {
        what: &'static str,
        seq: u64,
        source: CodecError,
    },
    /// A stored record could not be decoded.
    #[error("record {seq} of event log at {} does not decode: {source}", dir.display())]
    Decode {
        dir: PathBuf,
        seq: u64,
        source: CodecError,
    },
    /// A sled key in the log tree is not an 8-byte seq.
    #[error("event log at {} holds a key of {len} bytes in its log tree, not a seq", dir.display())]
    BadKey { dir: PathBuf, len: usize },
    /// A checkpoint body handed to `append` is not an encoded `Checkpoint`.
    #[error("a checkpoint record's body must be an encoded Checkpoint: {0}")]
    NotACheckpoint(CodecError),
    /// Account ids are joined to scopes with a NUL byte in the index, so they may not contain one.
    #[error("checkpoint account id {0:?} contains a NUL byte")]
    BadAccountId(String),
    /// The head in meta moved without this writer: someone else appended; refusing to fork.
    #[error(
        "event log at {}: expected head seq {expected} in meta but found {found}; another writer \
         appended, so this one stops instead of forking the chain",
        dir.display()
    )]
    HeadMoved {
        dir: PathBuf,
        expected: u64,
        found: u64,
    },
    /// The seq this writer was about to use is already taken.
    #[error("event log at {}: seq {seq} is already taken; refusing to overwrite it", dir.display())]
    SeqTaken { dir: PathBuf, seq: u64 },
    /// The checkpoint index names a record that is missing or not a checkpoint.
    #[error(
        "event log at {}: the checkpoint index points at record {seq}, which is {problem}; \
         rebuild the index",
        dir.display()
    )]
    DanglingIndex {
        dir: PathBuf,
        seq: u64,
        problem: &'static str,
    },
    /// The chain key file could not be read.
    #[error("cannot read the event-log chain key {}: {source}", path.display())]
    ChainKeyRead {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The chain key file could not be written.
    #[error("cannot write the event-log chain key {}: {source}", path.display())]
    ChainKeyWrite {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The chain key file is not a sealed chain key this build reads.
    #[error(
        "the event-log chain key {} is malformed ({len} bytes, format byte {format:#04x}); \
         restore it from a backup",
        path.display()
    )]
    ChainKeyMalformed {
        path: PathBuf,
        len: usize,
        format: u8,
    },
    /// The chain key file does not open with the master key given.
    #[error(
        "the event-log chain key {} does not open with this master key: it is sealed under \
         another one (after `tgingest keys rotate`, use the new key) or it was tampered with",
        path.display()
    )]
    ChainKeyWrongMaster { path: PathBuf },
    /// During rotation, the chain key file opens with neither key.
    #[error(
        "the event-log chain key {} opens with neither the current nor the new master key; \
         nothing was changed",
        path.display()
    )]
    ChainKeyNeither { path: PathBuf },
    /// The log has records but no chain key file, and they were not chained with the legacy key.
    #[error(
        "the event log at {} has records but no chain key file ({}), and its records were not \
         chained with the key derived from this master key either; restore {} from a backup \
         (or use the master key the log was written with)",
        dir.display(),
        super::CHAIN_KEY_FILE,
        super::CHAIN_KEY_FILE
    )]
    ChainKeyMissing { dir: PathBuf },
}
