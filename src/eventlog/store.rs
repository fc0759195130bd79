//! The log on disk: opening it, appending under one writer, reading checkpoints, verifying.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};

use super::checkpoint::{account_prefix, index_key};
use super::error::EventLogError;
use super::record::{Anchor, Record, RecordKind, key_seq, seq_key};
use super::verify::{HeadCheck, RawEntry, VerifyReport, walk, walk_from};
use super::{AuditEntry, Checkpoint, METRIC_APPENDS_TOTAL, METRIC_FLUSH_SECONDS, METRIC_HEAD_SEQ};
use crate::codec::{decode, encode};

const LOG_TREE: &str = "log";
const META_TREE: &str = "meta";
const INDEX_TREE: &str = "checkpoint_index";
const HEAD_KEY: &[u8] = b"head";
/// The file sled keeps its data in, inside the log directory.
const SLED_DB_FILE: &str = "db";

/// How far an append must get before it returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// On disk (a sled flush that covers it completed) before `append` returns.
    Flushed,
    /// In sled's memory; on disk with the next flush (background, explicit, or a later `Flushed`).
    Lazy,
}

/// Tuning of the sled database under the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventLogOptions {
    /// How often sled flushes `Lazy` records in the background; `None` turns that off.
    pub background_flush_ms: Option<u64>,
}

impl Default for EventLogOptions {
    fn default() -> Self {
        EventLogOptions {
            background_flush_ms: Some(500),
        }
    }
}

/// An open event log: one sled database in one directory, with one writer.
pub struct EventLog {
    dir: PathBuf,
    /// Wiped when the log is dropped.
    chain_key: zeroize::Zeroizing<[u8; 32]>,
    db: sled::Db,
    log: sled::Tree,
    meta: sled::Tree,
    index: sled::Tree,
    /// The head; holding this lock is being the writer, so appends never race for a seq.
    head: Mutex<Anchor>,
    /// Held while flushing, so callers queue behind one flush instead of each forcing their own.
    flusher: tokio::sync::Mutex<()>,
    /// The highest seq known to be on disk.
    durable_seq: AtomicU64,
    /// The head as each append leaves it, for readers that trail the log (the stream copy).
    head_tx: tokio::sync::watch::Sender<Anchor>,
}

impl std::fmt::Debug for EventLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the chain key: whoever holds it can forge a chain that verifies.
        f.debug_struct("EventLog")
            .field("dir", &self.dir)
            .field("head", &self.head())
            .finish_non_exhaustive()
    }
}

impl EventLog {
    /// Opens (or creates) the log in `dir`, keyed by `chain_key`
    /// ([`super::ChainKey::open_or_create`] gives the one sealed beside the log).
    pub fn open(dir: &Path, chain_key: [u8; 32]) -> Result<EventLog, EventLogError> {
        Self::open_with(dir, chain_key, &EventLogOptions::default())
    }

    /// Like [`EventLog::open`], with explicit sled tuning.
    ///
    /// Refuses a log whose head in meta and last record disagree, because appending would bury
    /// the damage under records that chain to it; `tgingest audit verify` shows what is wrong.
    pub fn open_with(
        dir: &Path,
        chain_key: [u8; 32],
        options: &EventLogOptions,
    ) -> Result<EventLog, EventLogError> {
        let db = open_db(dir, options.background_flush_ms)?;
        let tree = |name: &str| {
            db.open_tree(name).map_err(|source| EventLogError::Storage {
                dir: dir.to_path_buf(),
                doing: "opening a tree",
                source,
            })
        };
        let (log, meta, index) = (tree(LOG_TREE)?, tree(META_TREE)?, tree(INDEX_TREE)?);
        let head = read_head(&meta, dir)?.unwrap_or(Anchor::EMPTY);
        let last_seq = last_seq(&log, dir)?;
        if last_seq != head.seq {
            return Err(EventLogError::Inconsistent {
                dir: dir.to_path_buf(),
                head_seq: head.seq,
                last_seq,
            });
        }
        metrics::gauge!(METRIC_HEAD_SEQ).set(head.seq as f64);
        Ok(EventLog {
            dir: dir.to_path_buf(),
            chain_key: zeroize::Zeroizing::new(chain_key),
            db,
            log,
            meta,
            index,
            head: Mutex::new(head),
            flusher: tokio::sync::Mutex::new(()),
            // What open() read back from sled is on disk.
            durable_seq: AtomicU64::new(head.seq),
            head_tx: tokio::sync::watch::Sender::new(head),
        })
    }

    /// The directory the log lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Appends one record, chained to the head, and returns it.
    ///
    /// Log, head and checkpoint index change in one sled transaction. With
    /// [`Durability::Flushed`] the record is on disk when this returns.
    pub async fn append(
        &self,
        kind: RecordKind,
        body: Vec<u8>,
        durability: Durability,
    ) -> Result<Record, EventLogError> {
        let record = self.append_in_memory(kind, body)?;
        metrics::counter!(METRIC_APPENDS_TOTAL, "kind" => kind.as_str()).increment(1);
        if durability == Durability::Flushed {
            // After the writer lock is released, so concurrent appends can share one flush.
            self.flush_through(record.seq).await?;
        }
        Ok(record)
    }

    /// Appends an audit record and returns its seq.
    pub async fn audit(
        &self,
        entry: &AuditEntry,
        durability: Durability,
    ) -> Result<u64, EventLogError> {
        let body = encode(entry).map_err(|source| EventLogError::Encode {
            what: "audit entry",
            seq: self.head().seq + 1,
            source,
        })?;
        Ok(self.append(RecordKind::Audit, body, durability).await?.seq)
    }

    /// Records a checkpoint, always flushed, and returns its seq.
    ///
    /// Act upstream on it (ack a message, advance Telegram's update state) only after this
    /// returns `Ok`: before that, a crash may lose the checkpoint.
    pub async fn checkpoint(&self, cp: &Checkpoint) -> Result<u64, EventLogError> {
        let body = encode(cp).map_err(|source| EventLogError::Encode {
            what: "checkpoint",
            seq: self.head().seq + 1,
            source,
        })?;
        Ok(self
            .append(RecordKind::Checkpoint, body, Durability::Flushed)
            .await?
            .seq)
    }

    /// The newest checkpoint of one source of one account.
    pub fn latest_checkpoint(
        &self,
        account_id: &str,
        scope: &str,
    ) -> Result<Option<Checkpoint>, EventLogError> {
        let key = index_key(account_id, scope)
            .ok_or_else(|| EventLogError::BadAccountId(account_id.to_string()))?;
        let found = self
            .index
            .get(&key)
            .map_err(|e| self.storage("reading the index", e))?;
        found
            .map(|seq| self.indexed_checkpoint(&key, &seq))
            .transpose()
    }

    /// The newest checkpoint of every source of one account, ordered by scope.
    pub fn checkpoints_of(&self, account_id: &str) -> Result<Vec<Checkpoint>, EventLogError> {
        let prefix = account_prefix(account_id)
            .ok_or_else(|| EventLogError::BadAccountId(account_id.to_string()))?;
        self.index
            .scan_prefix(&prefix)
            .map(|entry| {
                let (key, seq) = entry.map_err(|e| self.storage("reading the index", e))?;
                self.indexed_checkpoint(&key, &seq)
            })
            .collect()
    }

    /// Rebuilds the checkpoint index from the log (it is derived state); returns its entry count.
    pub fn rebuild_checkpoint_index(&self) -> Result<usize, EventLogError> {
        // Holding the writer lock keeps appends from updating the index while it is replaced.
        let _writer = self.lock_head();
        let mut newest: BTreeMap<Vec<u8>, u64> = BTreeMap::new();
        for record in self.records() {
            let record = record?;
            if record.kind == RecordKind::Checkpoint {
                let cp: Checkpoint =
                    decode(&record.body).map_err(|source| EventLogError::Decode {
                        dir: self.dir.clone(),
                        seq: record.seq,
                        source,
                    })?;
                let key = index_key(&cp.account_id, &cp.scope)
                    .ok_or(EventLogError::BadAccountId(cp.account_id))?;
                newest.insert(key, record.seq);
            }
        }
        // One batch, so a crash leaves either the old index or the new one.
        let mut batch = sled::Batch::default();
        for key in self.index.iter().keys() {
            let key = key.map_err(|e| self.storage("reading the index", e))?;
            if !newest.contains_key(key.as_ref()) {
                batch.remove(key);
            }
        }
        for (key, seq) in &newest {
            batch.insert(key.as_slice(), &seq_key(*seq));
        }
        self.index
            .apply_batch(batch)
            .map_err(|e| self.storage("rewriting the index", e))?;
        Ok(newest.len())
    }

    /// The newest record's seq and hash (seq 0 and the zero hash when empty), to anchor elsewhere.
    pub fn head(&self) -> Anchor {
        *self.lock_head()
    }

    /// Follows the head: the receiver sees every change, so a task that trails the log (the
    /// stream copy) wakes on appends instead of polling, and appends never wait for it.
    pub fn watch_head(&self) -> tokio::sync::watch::Receiver<Anchor> {
        self.head_tx.subscribe()
    }

    /// Puts every record appended so far on disk and returns the head that is now durable, so a
    /// copy made elsewhere never holds a record a crash could still take from the local log.
    pub async fn durable_head(&self) -> Result<Anchor, EventLogError> {
        let head = self.head();
        self.flush_through(head.seq).await?;
        Ok(head)
    }

    /// The stored bytes of record `seq` (the encoded [`Record`]), if the log holds it.
    pub fn raw_record(&self, seq: u64) -> Result<Option<Vec<u8>>, EventLogError> {
        let value = self
            .log
            .get(seq_key(seq))
            .map_err(|e| self.storage("reading the log", e))?;
        Ok(value.map(|v| v.to_vec()))
    }

    /// Verifies the whole chain and that it ends at the head in meta.
    ///
    /// Appends wait meanwhile (the walk holds the writer's lock): otherwise a record appended
    /// between reading the head and walking the log would look like a log longer than its head.
    pub fn verify(&self) -> VerifyReport {
        let _writers_wait = self.lock_head();
        let report = verify_trees(&self.chain_key, &self.log, &self.meta, None);
        report.publish();
        report
    }

    /// Like [`EventLog::verify`], and the log must reach `anchor` and hold its hash at its seq.
    pub fn verify_against(&self, anchor: &Anchor) -> VerifyReport {
        let _writers_wait = self.lock_head();
        let report = verify_trees(&self.chain_key, &self.log, &self.meta, Some(anchor));
        report.publish();
        report
    }

    /// Verifies the records appended after `verified` (a record an earlier check passed; the
    /// empty anchor for the whole log) up to the current head, and that the log holds `anchor`
    /// (the head anchored in JetStream) wherever it lies. Returns the report and the head it
    /// reached, from which the next check goes on.
    ///
    /// Unlike [`EventLog::verify`], appends do not wait: only records up to the head read at the
    /// start are walked, and those never change.
    pub fn verify_since(
        &self,
        verified: &Anchor,
        anchor: Option<&Anchor>,
    ) -> (VerifyReport, Anchor) {
        let head = self.head();
        let report = self.verify_range(verified, &head, anchor);
        report.publish();
        (report, head)
    }

    fn verify_range(&self, from: &Anchor, head: &Anchor, anchor: Option<&Anchor>) -> VerifyReport {
        if head.seq < from.seq {
            return VerifyReport::failed(
                head.seq + 1,
                format!("log truncated: it was verified up to {}", from.seq),
            );
        }
        // An anchor inside the part verified before is checked by a look-up of its record.
        let mut checks = vec![HeadCheck::Meta(head)];
        match anchor {
            Some(a) if a.seq > from.seq => checks.push(HeadCheck::Anchor(a)),
            Some(a) if a.seq > 0 => {
                let record = match self.log.get(seq_key(a.seq)) {
                    Ok(Some(bytes)) => decode::<Record>(&bytes).map_err(|e| e.to_string()),
                    Ok(None) => Err("missing".to_string()),
                    Err(e) => Err(e.to_string()),
                };
                match record {
                    Ok(r) if r.hash == a.hash => {}
                    Ok(_) => return VerifyReport::failed(a.seq, "hash differs from the anchor"),
                    Err(e) => {
                        return VerifyReport::failed(a.seq, format!("anchored record: {e}"));
                    }
                }
            }
            _ => {}
        }
        // Nothing new is an empty walk (sled's range wants start <= end).
        let end = seq_key(head.seq.max(from.seq + 1));
        let entries = self
            .log
            .range(seq_key(from.seq + 1)..=end)
            .map(|entry| -> RawEntry {
                entry
                    .map(|(k, v)| (k.to_vec(), v.to_vec()))
                    .map_err(|e| e.to_string())
            });
        walk_from(&self.chain_key, *from, entries, &checks)
    }

    /// Puts every record appended so far on disk.
    pub async fn flush(&self) -> Result<(), EventLogError> {
        let through = self.head().seq;
        self.flush_through(through).await
    }

    /// Puts records up to `seq` on disk, sharing one flush among concurrent callers.
    async fn flush_through(&self, seq: u64) -> Result<(), EventLogError> {
        let _flusher = self.flusher.lock().await;
        if self.durable_seq.load(Ordering::Acquire) >= seq {
            return Ok(()); // a flush that started after our commit already covered it
        }
        let target = self.head().seq;
        let started = Instant::now();
        // sled 0.34's `flush_async` can deadlock when several run at once (spacejam/sled#1308),
        // so the blocking flush runs on tokio's blocking pool instead.
        let db = self.db.clone();
        let flushed = tokio::task::spawn_blocking(move || db.flush())
            .await
            .map_err(|_| EventLogError::FlushAborted {
                dir: self.dir.clone(),
            })?;
        flushed.map_err(|source| EventLogError::Flush {
            dir: self.dir.clone(),
            source,
        })?;
        self.durable_seq.fetch_max(target, Ordering::AcqRel);
        metrics::histogram!(METRIC_FLUSH_SECONDS).record(started.elapsed().as_secs_f64());
        Ok(())
    }

    /// All records in seq order, decoded (not verified: see [`EventLog::verify`]).
    pub fn records(&self) -> impl Iterator<Item = Result<Record, EventLogError>> + use<> {
        let dir = self.dir.clone();
        self.log.iter().map(move |entry| {
            let (key, value) = entry.map_err(|source| EventLogError::Storage {
                dir: dir.clone(),
                doing: "reading the log",
                source,
            })?;
            let seq = key_seq(&key).ok_or_else(|| EventLogError::BadKey {
                dir: dir.clone(),
                len: key.len(),
            })?;
            decode(&value).map_err(|source| EventLogError::Decode {
                dir: dir.clone(),
                seq,
                source,
            })
        })
    }

    fn lock_head(&self) -> MutexGuard<'_, Anchor> {
        // The head only changes after a committed transaction, so a panic elsewhere while the lock
        // was held cannot have left it wrong.
        self.head.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn storage(&self, doing: &'static str, source: sled::Error) -> EventLogError {
        EventLogError::Storage {
            dir: self.dir.clone(),
            doing,
            source,
        }
    }

    /// Chains and commits one record under the writer lock; durability is the caller's business.
    fn append_in_memory(&self, kind: RecordKind, body: Vec<u8>) -> Result<Record, EventLogError> {
        let index_key = match kind {
            RecordKind::Audit => None,
            RecordKind::Checkpoint => {
                let cp: Checkpoint = decode(&body).map_err(EventLogError::NotACheckpoint)?;
                Some(
                    index_key(&cp.account_id, &cp.scope)
                        .ok_or(EventLogError::BadAccountId(cp.account_id))?,
                )
            }
        };
        let mut head = self.lock_head();
        let expected = *head;
        let seq = expected.seq + 1;
        let encode_err = |what| move |source| EventLogError::Encode { what, seq, source };
        let ts_ms = jiff::Timestamp::now().as_millisecond();
        let record = Record::next(&self.chain_key, &expected, ts_ms, kind, body)
            .map_err(encode_err("record hash input"))?;
        let value = encode(&record).map_err(encode_err("record"))?;
        let new_head = encode(&record.anchor()).map_err(encode_err("head"))?;
        let abort = |e| Err(ConflictableTransactionError::Abort(e));
        let dir = || self.dir.clone();

        let committed = (&self.log, &self.meta, &self.index).transaction(|(log, meta, index)| {
            // Compare-and-swap on the head: a writer that is not us shows up as an error.
            let found = match meta.get(HEAD_KEY)? {
                None => Anchor::EMPTY,
                Some(bytes) => match decode::<Anchor>(&bytes) {
                    Ok(found) => found,
                    Err(source) => return abort(EventLogError::BadHead { dir: dir(), source }),
                },
            };
            if found != expected {
                return abort(EventLogError::HeadMoved {
                    dir: dir(),
                    expected: expected.seq,
                    found: found.seq,
                });
            }
            if log.insert(&seq_key(seq)[..], value.as_slice())?.is_some() {
                return abort(EventLogError::SeqTaken { dir: dir(), seq });
            }
            meta.insert(HEAD_KEY, new_head.as_slice())?;
            if let Some(key) = &index_key {
                index.insert(key.as_slice(), &seq_key(seq)[..])?;
            }
            Ok(())
        });
        match committed {
            Ok(()) => {}
            Err(TransactionError::Abort(e)) => return Err(e),
            Err(TransactionError::Storage(e)) => return Err(self.storage("appending a record", e)),
        }
        *head = record.anchor();
        // Still under the writer lock, so followers see heads in order.
        self.head_tx.send_replace(*head);
        metrics::gauge!(METRIC_HEAD_SEQ).set(seq as f64);
        Ok(record)
    }

    /// Reads the checkpoint the index entry `key → seq` points at, checking that it fits.
    fn indexed_checkpoint(&self, key: &[u8], seq: &[u8]) -> Result<Checkpoint, EventLogError> {
        let dangling = |seq, problem| EventLogError::DanglingIndex {
            dir: self.dir.clone(),
            seq,
            problem,
        };
        let seq = key_seq(seq).ok_or(dangling(0, "not a seq"))?;
        let value = self
            .log
            .get(seq_key(seq))
            .map_err(|e| self.storage("reading the log", e))?
            .ok_or(dangling(seq, "missing"))?;
        let decode_err = |source| EventLogError::Decode {
            dir: self.dir.clone(),
            seq,
            source,
        };
        let record: Record = decode(&value).map_err(decode_err)?;
        if record.kind != RecordKind::Checkpoint {
            return Err(dangling(seq, "not a checkpoint"));
        }
        let cp: Checkpoint = decode(&record.body).map_err(decode_err)?;
        if index_key(&cp.account_id, &cp.scope).as_deref() != Some(key) {
            return Err(dangling(seq, "a checkpoint of another account or scope"));
        }
        Ok(cp)
    }
}

/// Verifies the log in `dir` without appending to it, for `tgingest audit verify`.
///
/// Fails with [`EventLogError::NotFound`] when `dir` holds no event log, instead of creating one,
/// and with [`EventLogError::InUse`] while the service has it open.
pub fn verify_dir(dir: &Path, chain_key: [u8; 32]) -> Result<VerifyReport, EventLogError> {
    verify_dir_with(dir, chain_key, None)
}

/// Like [`verify_dir`], and also checks that the log reaches `anchor` (a head recorded outside
/// this node's disk) with the same hash, so a truncated or rewritten log is caught.
pub fn verify_dir_against(
    dir: &Path,
    chain_key: [u8; 32],
    anchor: &Anchor,
) -> Result<VerifyReport, EventLogError> {
    verify_dir_with(dir, chain_key, Some(anchor))
}

fn verify_dir_with(
    dir: &Path,
    chain_key: [u8; 32],
    anchor: Option<&Anchor>,
) -> Result<VerifyReport, EventLogError> {
    let not_found = |problem: &str| EventLogError::NotFound {
        dir: dir.to_path_buf(),
        problem: problem.to_string(),
    };
    if !dir.is_dir() {
        return Err(not_found("no such directory"));
    }
    if !dir.join(SLED_DB_FILE).is_file() {
        return Err(not_found("the directory holds no sled database"));
    }
    let db = open_db(dir, None)?;
    let has_tree = |name: &str| {
        db.tree_names()
            .iter()
            .any(|t| t.as_ref() == name.as_bytes())
    };
    if !has_tree(LOG_TREE) || !has_tree(META_TREE) {
        return Err(not_found(
            "the sled database holds no `log` and `meta` trees",
        ));
    }
    let tree = |name: &str| {
        db.open_tree(name).map_err(|source| EventLogError::Storage {
            dir: dir.to_path_buf(),
            doing: "opening a tree",
            source,
        })
    };
    let report = verify_trees(&chain_key, &tree(LOG_TREE)?, &tree(META_TREE)?, anchor);
    report.publish();
    Ok(report)
}

/// Whether the newest record of the log in `dir` was chained with `chain_key`; `None` when `dir`
/// holds no log or an empty one. Opens (and so locks) the database for the moment it reads.
pub(super) fn newest_record_fits(
    dir: &Path,
    chain_key: &[u8; 32],
) -> Result<Option<bool>, EventLogError> {
    if !dir.join(SLED_DB_FILE).is_file() {
        return Ok(None);
    }
    let db = open_db(dir, None)?;
    if !db
        .tree_names()
        .iter()
        .any(|t| t.as_ref() == LOG_TREE.as_bytes())
    {
        return Ok(None);
    }
    let storage = |doing, source| EventLogError::Storage {
        dir: dir.to_path_buf(),
        doing,
        source,
    };
    let log = db
        .open_tree(LOG_TREE)
        .map_err(|e| storage("opening a tree", e))?;
    let Some((key, value)) = log.last().map_err(|e| storage("reading the log", e))? else {
        return Ok(None);
    };
    let seq = key_seq(&key).unwrap_or(0);
    let record: Record = decode(&value).map_err(|source| EventLogError::Decode {
        dir: dir.to_path_buf(),
        seq,
        source,
    })?;
    Ok(Some(
        record.expected_hash(chain_key).ok() == Some(record.hash),
    ))
}

/// Verifies the `log` tree against the head in `meta` and, if given, an anchor.
fn verify_trees(
    chain_key: &[u8; 32],
    log: &sled::Tree,
    meta: &sled::Tree,
    anchor: Option<&Anchor>,
) -> VerifyReport {
    let entries = log.iter().map(|entry| -> RawEntry {
        entry
            .map(|(k, v)| (k.to_vec(), v.to_vec()))
            .map_err(|e| e.to_string())
    });
    let stored_head = match meta.get(HEAD_KEY) {
        Ok(None) => Ok(Anchor::EMPTY),
        Ok(Some(bytes)) => decode::<Anchor>(&bytes).map_err(|e| format!("does not decode: {e}")),
        Err(e) => Err(format!("cannot be read: {e}")),
    };
    match &stored_head {
        Ok(head) => {
            let mut checks = vec![HeadCheck::Meta(head)];
            checks.extend(anchor.map(HeadCheck::Anchor));
            walk(chain_key, entries, &checks)
        }
        Err(problem) => {
            let checks: Vec<_> = anchor.map(HeadCheck::Anchor).into_iter().collect();
            let report = walk(chain_key, entries, &checks);
            if !report.ok {
                return report;
            }
            VerifyReport::failed(report.verified + 1, format!("the head in meta {problem}"))
        }
    }
}

/// How long opening waits for sled's file lock before reporting the log as in use.
///
/// sled's IO threads can keep the file (and its lock) open for a moment after the `Db` that used
/// it was dropped, so a prompt reopen in the same process, or a restart right after an exit, would
/// otherwise be refused.
const LOCK_WAIT: Duration = Duration::from_secs(1);

/// Opens sled in `dir`, telling a held lock apart from other failures.
fn open_db(dir: &Path, background_flush_ms: Option<u64>) -> Result<sled::Db, EventLogError> {
    let config = sled::Config::new()
        .path(dir)
        .flush_every_ms(background_flush_ms);
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        match config.open() {
            Ok(db) => return Ok(db),
            // sled reports a held lock only as an io::Error of kind Other with this text.
            Err(sled::Error::Io(e)) if e.to_string().contains("could not acquire lock") => {
                if Instant::now() >= deadline {
                    return Err(EventLogError::InUse {
                        dir: dir.to_path_buf(),
                    });
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(source) => {
                return Err(EventLogError::Open {
                    dir: dir.to_path_buf(),
                    source,
                });
            }
        }
    }
}

fn read_head(meta: &sled::Tree, dir: &Path) -> Result<Option<Anchor>, EventLogError> {
    let bytes = meta
        .get(HEAD_KEY)
        .map_err(|source| EventLogError::Storage {
            dir: dir.to_path_buf(),
            doing: "reading the head",
            source,
        })?;
    bytes
        .map(|bytes| decode(&bytes))
        .transpose()
        .map_err(|source| EventLogError::BadHead {
            dir: dir.to_path_buf(),
            source,
        })
}

fn last_seq(log: &sled::Tree, dir: &Path) -> Result<u64, EventLogError> {
    let last = log.last().map_err(|source| EventLogError::Storage {
        dir: dir.to_path_buf(),
        doing: "reading the last record",
        source,
    })?;
    match last {
        None => Ok(0),
        Some((key, _)) => key_seq(&key).ok_or(EventLogError::BadKey {
            dir: dir.to_path_buf(),
            len: key.len(),
        }),
    }
}
