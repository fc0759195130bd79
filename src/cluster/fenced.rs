//! Account state written only by the account's current owner: KV records whose every write is
//! stamped with the owner's epoch and applied only by compare-and-set on the revision the writer
//! last saw (issue 13, item 5; the Temporal range-id pattern).
//!
//! The stamp travels in message headers ([`HEADER_EPOCH`], [`HEADER_NODE`], [`HEADER_WRITER`]),
//! so a record's value keeps its own format (a sealed session stays the sealed blob). The rules:
//!
//! * An owner starts by *claiming* the record: it reads the newest revision from the stream
//!   leader and writes it back stamped with its epoch, refused if the stored epoch is higher.
//!   From then on an older owner's write no longer matches the revision, so it fails even before
//!   the new owner has anything of its own to write.
//! * Every later write expects the revision this writer last wrote. When another revision is
//!   there, the writer reads it: its own write whose answer was lost is taken as written; a
//!   higher epoch is [`FencedError::StaleOwner`] (counted in [`METRIC_STALE_OWNER_WRITES`]);
//!   anything else is [`FencedError::Replaced`]. Either refusal sticks: the writer never writes
//!   again, and never overwrites what it found.
//!
//! Raw publishes, not the KV API: `kv::Store::update` carries no headers, and a read through
//! `kv::Store::entry` may be served by a lagging replica and drops the headers.

use std::fmt;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::kv;
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::stream::LastRawMessageErrorKind;
use bytes::Bytes;

use crate::bus::Bus;
use crate::telemetry::hash_id;

/// Header with the epoch of the owner that wrote a record.
pub const HEADER_EPOCH: &str = "Tgingest-Epoch";
/// Header with the node that wrote a record.
pub const HEADER_NODE: &str = "Tgingest-Node";
/// Header naming the writer (one per claim; [`ADMIN_WRITER`] for operator writes).
pub const HEADER_WRITER: &str = "Tgingest-Writer";
/// The writer name of operator writes (import, login, key rotation), which keep the stored epoch.
pub const ADMIN_WRITER: &str = "admin";
/// Counter of state writes refused because a newer owner had written, labelled `kind`
/// (`checkpoint`, `session`).
pub const METRIC_STALE_OWNER_WRITES: &str = "tgingest_stale_owner_writes_total";

/// How many times a claim reads and tries again when the record changed under it.
const CLAIM_ATTEMPTS: usize = 5;
/// How many times a write adopts its own earlier write (answer lost) and tries again.
const WRITE_ATTEMPTS: usize = 3;
/// How long a write waits for its PubAck before it is reported as [`FencedError::Unknown`].
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// Which piece of an account's state a record is (the metric label and the error wording).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateKind {
    /// The acknowledged source cursor, with the pending backfill inside it (`TG_CHECKPOINTS`).
    Checkpoint,
    /// The sealed Telegram session (`TG_SESSIONS`).
    Session,
}

impl StateKind {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            StateKind::Checkpoint => "checkpoint",
            StateKind::Session => "session",
        }
    }
}

impl fmt::Display for StateKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who owns an account now: the epoch of its claim (0 on a single node) and the node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Owner {
    pub epoch: u64,
    pub node: String,
}

impl Owner {
    /// The owner `node` with `epoch`.
    pub fn new(epoch: u64, node: &str) -> Owner {
        Owner {
            epoch,
            node: node.to_string(),
        }
    }
}

/// What a write left on a record; all empty (epoch 0) on a record written without one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stamp {
    pub epoch: u64,
    pub node: String,
    pub writer: String,
}

impl Stamp {
    fn headers(&self) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(HEADER_EPOCH, self.epoch.to_string().as_str());
        if !self.node.is_empty() {
            headers.insert(HEADER_NODE, self.node.as_str());
        }
        if !self.writer.is_empty() {
            headers.insert(HEADER_WRITER, self.writer.as_str());
        }
        headers
    }

    fn from_headers(headers: &HeaderMap) -> Result<Stamp, String> {
        let text = |name: &str| headers.get(name).map(|v| v.as_str().to_string());
        let epoch = match text(HEADER_EPOCH) {
            None => 0,
            Some(e) => e
                .parse()
                .map_err(|_| format!("header {HEADER_EPOCH} is {e:?}, not a number"))?,
        };
        Ok(Stamp {
            epoch,
            node: text(HEADER_NODE).unwrap_or_default(),
            writer: text(HEADER_WRITER).unwrap_or_default(),
        })
    }
}

/// A record as the stream leader has it: its value (`None` when deleted, purged or never
/// written), the revision to expect when writing it next (0: no trace of the key), its stamp.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Latest {
    pub value: Option<Bytes>,
    pub revision: u64,
    pub stamp: Stamp,
}

/// Why a fenced record could not be read or written. Names the account by its keyed hash.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FencedError {
    /// A newer owner wrote the record: this node no longer owns the account.
    #[error(
        "the {kind} of account {} was written by a newer owner (epoch {stored}; this writer's is \
         {mine}): the write was refused, this node no longer owns the account",
        hash_id(.account)
    )]
    StaleOwner {
        kind: StateKind,
        account: String,
        mine: u64,
        stored: u64,
    },
    /// Someone else replaced the record (an operator, or a writer of an epoch not newer than this
    /// one): the write was refused; starting the account again loads what is stored now.
    #[error(
        "the {kind} of account {} was replaced at revision {revision} by {writer:?} of epoch \
         {stored} (this writer's is {mine}): the write was refused; start the account again to \
         load what is stored",
        hash_id(.account)
    )]
    Replaced {
        kind: StateKind,
        account: String,
        revision: u64,
        writer: String,
        mine: u64,
        stored: u64,
    },
    /// The server did not answer: the write may or may not have been applied.
    #[error(
        "writing the {kind} of account {} had no answer ({message}); it may or may not have been \
         applied",
        hash_id(.account)
    )]
    Unknown {
        kind: StateKind,
        account: String,
        message: String,
    },
    #[error("cannot read the {kind} of account {} from {bucket}: {message}", hash_id(.account))]
    Read {
        kind: StateKind,
        account: String,
        bucket: String,
        message: String,
    },
    #[error("cannot open KV bucket {bucket} (run the bus set-up first): {message}")]
    Open { bucket: String, message: String },
    #[error(
        "account id {account:?} cannot be a key of {bucket}: use letters, digits, '-', '_', '=', \
         '/' and '.'"
    )]
    BadKey { bucket: String, account: String },
    /// An operator's write found the record changed since `expected`: it was not applied.
    #[error(
        "the {kind} of account {} changed since revision {expected}; the write was refused",
        hash_id(.account)
    )]
    Changed {
        kind: StateKind,
        account: String,
        expected: u64,
    },
    #[error(
        "the {kind} of account {} changed under every one of {attempts} attempts to claim it",
        hash_id(.account)
    )]
    Contended {
        kind: StateKind,
        account: String,
        attempts: usize,
    },
    #[error(
        "the {kind} of account {} at revision {revision} is not a valid record: {message}",
        hash_id(.account)
    )]
    Corrupt {
        kind: StateKind,
        account: String,
        revision: u64,
        message: String,
    },
}

impl FencedError {
    /// Whether the write was refused for good (a newer owner, or a replaced record): the writer
    /// must stop, and its account with it.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            FencedError::StaleOwner { .. } | FencedError::Replaced { .. }
        )
    }
}

/// Whether `account` can be a KV key (what `TG_SESSIONS` has always accepted).
pub fn valid_key(account: &str) -> bool {
    !account.is_empty()
        && !account.starts_with('.')
        && !account.ends_with('.')
        && account
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_=/.".contains(&b))
}

/// Why a raw publish was not applied.
enum PublishFailure {
    Conflict,
    Unknown(String),
}

/// The fenced view of one KV bucket, one key per account.
#[derive(Clone)]
pub struct FencedKv {
    js: async_nats::jetstream::Context,
    store: kv::Store,
    kind: StateKind,
}

impl FencedKv {
    /// Opens `bucket` (created by [`Bus::setup`]) for records of `kind`.
    pub async fn open(bus: &Bus, bucket: &str, kind: StateKind) -> Result<FencedKv, FencedError> {
        let store = bus
            .js
            .get_key_value(bucket)
            .await
            .map_err(|e| FencedError::Open {
                bucket: bucket.to_string(),
                message: e.to_string(),
            })?;
        Ok(FencedKv::over(bus.js.clone(), store, kind))
    }

    /// The fenced view of an already opened store.
    pub fn over(js: async_nats::jetstream::Context, store: kv::Store, kind: StateKind) -> Self {
        FencedKv { js, store, kind }
    }

    fn subject(&self, account: &str) -> String {
        format!("$KV.{}.{account}", self.store.name)
    }

    fn check_key(&self, account: &str) -> Result<(), FencedError> {
        if valid_key(account) {
            Ok(())
        } else {
            Err(FencedError::BadKey {
                bucket: self.store.name.clone(),
                account: account.to_string(),
            })
        }
    }

    /// Reads `account`'s record from the stream leader (a direct get may come from a lagging
    /// replica, and a claim must see the newest revision).
    pub async fn read(&self, account: &str) -> Result<Latest, FencedError> {
        self.check_key(account)?;
        let message = match self
            .store
            .stream
            .get_last_raw_message_by_subject(&self.subject(account))
            .await
        {
            Ok(m) => m,
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => {
                return Ok(Latest::default());
            }
            Err(e) => {
                return Err(FencedError::Read {
                    kind: self.kind,
                    account: account.to_string(),
                    bucket: self.store.name.clone(),
                    message: e.to_string(),
                });
            }
        };
        let stamp = Stamp::from_headers(&message.headers).map_err(|m| FencedError::Corrupt {
            kind: self.kind,
            account: account.to_string(),
            revision: message.sequence,
            message: m,
        })?;
        // Deletions and purges are markers carrying `KV-Operation`; a put carries none.
        let deleted = message.headers.get("KV-Operation").is_some();
        Ok(Latest {
            value: (!deleted).then_some(message.payload),
            revision: message.sequence,
            stamp,
        })
    }

    /// Writes `value` stamped with `stamp` if the record's last revision is still `expected`
    /// (0: the key has no trace); returns the new revision.
    async fn publish(
        &self,
        account: &str,
        value: Bytes,
        stamp: &Stamp,
        expected: u64,
    ) -> Result<u64, PublishFailure> {
        let message = PublishMessage::build()
            .payload(value)
            .headers(stamp.headers())
            .expected_last_subject_sequence(expected);
        let publish = async {
            self.js
                .send_publish(self.subject(account), message)
                .await?
                .await
                .map(|ack| ack.sequence)
        };
        match tokio::time::timeout(WRITE_TIMEOUT, publish).await {
            Err(_) => Err(PublishFailure::Unknown(format!(
                "no answer within {WRITE_TIMEOUT:?}"
            ))),
            Ok(Ok(revision)) => Ok(revision),
            Ok(Err(e)) if crate::bus::wrong_last_sequence(&e) => Err(PublishFailure::Conflict),
            Ok(Err(e)) => Err(PublishFailure::Unknown(e.to_string())),
        }
    }

    fn unknown(&self, account: &str, message: String) -> FencedError {
        FencedError::Unknown {
            kind: self.kind,
            account: account.to_string(),
            message,
        }
    }

    /// Takes `account`'s record over as `owner`: reads it and writes back what `make` returns
    /// for the stored value, stamped with the owner's epoch, reading again if it changed
    /// meanwhile. Refused ([`FencedError::StaleOwner`]) when a newer owner has written. Returns
    /// the writer for the owner's later writes and the value the claim found.
    pub async fn claim<E: From<FencedError>>(
        &self,
        account: &str,
        owner: &Owner,
        mut make: impl FnMut(Option<&Bytes>) -> Result<Bytes, E>,
    ) -> Result<(FencedWriter, Option<Bytes>), E> {
        let stamp = Stamp {
            epoch: owner.epoch,
            node: owner.node.clone(),
            writer: uuid::Uuid::new_v4().to_string(),
        };
        for _ in 0..CLAIM_ATTEMPTS {
            let latest = self.read(account).await?;
            if latest.stamp.epoch > owner.epoch {
                return Err(self.stale(account, owner.epoch, latest.stamp.epoch).into());
            }
            let value = make(latest.value.as_ref())?;
            match self.publish(account, value, &stamp, latest.revision).await {
                Ok(revision) => {
                    let writer = self.writer_at(account, stamp, revision);
                    return Ok((writer, latest.value));
                }
                Err(PublishFailure::Conflict) => continue,
                Err(PublishFailure::Unknown(m)) => return Err(self.unknown(account, m).into()),
            }
        }
        Err(FencedError::Contended {
            kind: self.kind,
            account: account.to_string(),
            attempts: CLAIM_ATTEMPTS,
        }
        .into())
    }

    /// A writer for a record this process has just written at `revision` without a claim (a
    /// session it created).
    pub fn writer_at(&self, account: &str, stamp: Stamp, revision: u64) -> FencedWriter {
        FencedWriter {
            kv: self.clone(),
            account: account.to_string(),
            stamp,
            revision,
            refused: None,
        }
    }

    /// Writes `value` for an operator whatever is stored, keeping the stamp of the owner that
    /// wrote last (so an import or a new login neither lowers nor raises the epoch); reads again
    /// when the record changes between the read and the write. Returns the new revision.
    pub async fn put_as_admin(&self, account: &str, value: Bytes) -> Result<u64, FencedError> {
        for _ in 0..CLAIM_ATTEMPTS {
            let latest = self.read(account).await?;
            match self.replace_as_admin(account, value.clone(), &latest).await {
                Err(FencedError::Changed { .. }) => continue,
                done => return done,
            }
        }
        Err(FencedError::Contended {
            kind: self.kind,
            account: account.to_string(),
            attempts: CLAIM_ATTEMPTS,
        })
    }

    /// Writes `value` for an operator if the record is still as `latest` (a [`FencedKv::read`])
    /// found it, keeping its stamp; [`FencedError::Changed`] otherwise.
    pub async fn replace_as_admin(
        &self,
        account: &str,
        value: Bytes,
        latest: &Latest,
    ) -> Result<u64, FencedError> {
        let stamp = Stamp {
            writer: ADMIN_WRITER.to_string(),
            ..latest.stamp.clone()
        };
        match self.publish(account, value, &stamp, latest.revision).await {
            Ok(revision) => Ok(revision),
            Err(PublishFailure::Conflict) => Err(FencedError::Changed {
                kind: self.kind,
                account: account.to_string(),
                expected: latest.revision,
            }),
            Err(PublishFailure::Unknown(m)) => Err(self.unknown(account, m)),
        }
    }

    fn stale(&self, account: &str, mine: u64, stored: u64) -> FencedError {
        metrics::counter!(METRIC_STALE_OWNER_WRITES, "kind" => self.kind.as_str()).increment(1);
        tracing::warn!(
            account = %hash_id(account),
            kind = self.kind.as_str(),
            mine,
            stored,
            "a newer owner wrote this account's state; refusing this node's write"
        );
        FencedError::StaleOwner {
            kind: self.kind,
            account: account.to_string(),
            mine,
            stored,
        }
    }
}

/// One owner's writes to one account's record, each expecting the revision it wrote last.
pub struct FencedWriter {
    kv: FencedKv,
    account: String,
    stamp: Stamp,
    revision: u64,
    /// The refusal that ended this writer, returned by every later write.
    refused: Option<FencedError>,
}

impl fmt::Debug for FencedWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FencedWriter")
            .field("kind", &self.kv.kind)
            .field("account", &hash_id(&self.account))
            .field("epoch", &self.stamp.epoch)
            .field("revision", &self.revision)
            .field("refused", &self.refused.is_some())
            .finish()
    }
}

impl FencedWriter {
    /// The revision this writer wrote last.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// The owner's epoch this writer stamps.
    pub fn epoch(&self) -> u64 {
        self.stamp.epoch
    }

    /// The refusal that stopped this writer, if one did.
    pub fn refused(&self) -> Option<&FencedError> {
        self.refused.as_ref()
    }

    /// Writes `value` if the record is still as this writer left it; returns the new revision.
    /// A refusal ([`FencedError::is_refusal`]) is final; [`FencedError::Unknown`] may be retried
    /// (a retry finds the first attempt if it was applied after all).
    pub async fn write(&mut self, value: Bytes) -> Result<u64, FencedError> {
        if let Some(refused) = &self.refused {
            return Err(refused.clone());
        }
        for _ in 0..WRITE_ATTEMPTS {
            let failure = match self
                .kv
                .publish(&self.account, value.clone(), &self.stamp, self.revision)
                .await
            {
                Ok(revision) => {
                    self.revision = revision;
                    return Ok(revision);
                }
                Err(failure) => failure,
            };
            if let PublishFailure::Unknown(m) = failure {
                return Err(self.kv.unknown(&self.account, m));
            }
            let latest = self.kv.read(&self.account).await?;
            if latest.stamp.writer == self.stamp.writer || latest.revision == 0 {
                // Our own write whose answer was lost, or a key without any trace (its bucket
                // was re-created): nobody else wrote since, so write on top of it.
                self.revision = latest.revision;
                continue;
            }
            let refusal = if latest.stamp.epoch > self.stamp.epoch {
                self.kv
                    .stale(&self.account, self.stamp.epoch, latest.stamp.epoch)
            } else {
                tracing::warn!(
                    account = %hash_id(&self.account),
                    kind = self.kv.kind.as_str(),
                    revision = latest.revision,
                    "this account's state was replaced under its owner; refusing the write"
                );
                FencedError::Replaced {
                    kind: self.kv.kind,
                    account: self.account.clone(),
                    revision: latest.revision,
                    writer: latest.stamp.writer,
                    mine: self.stamp.epoch,
                    stored: latest.stamp.epoch,
                }
            };
            self.refused = Some(refusal.clone());
            return Err(refusal);
        }
        Err(self.kv.unknown(
            &self.account,
            format!("the record kept moving under {WRITE_ATTEMPTS} attempts"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamp_round_trips_through_headers_and_an_unstamped_record_has_epoch_0() {
        let stamp = Stamp {
            epoch: 7,
            node: "n1".into(),
            writer: "w".into(),
        };
        assert_eq!(Stamp::from_headers(&stamp.headers()), Ok(stamp));
        assert_eq!(Stamp::from_headers(&HeaderMap::new()), Ok(Stamp::default()));
        let mut bad = HeaderMap::new();
        bad.insert(HEADER_EPOCH, "seven");
        assert!(Stamp::from_headers(&bad).unwrap_err().contains("seven"));
    }

    #[test]
    fn keys_are_what_the_session_bucket_always_accepted() {
        assert!(valid_key("123456789"));
        assert!(valid_key("sim-1_a=b/c.d"));
        for bad in ["", ".a", "a.", "a b", "a*", "a>"] {
            assert!(!valid_key(bad), "{bad:?}");
        }
    }
}
