//! Sealed sessions in the JetStream KV bucket `TG_SESSIONS`, one key per account, so any node can
//! take an account over. Only sealed bytes ever reach NATS; the master key never does.
//!
//! The running account writes its session only as its owner ([`crate::cluster::fenced`]): it
//! claims the record when it loads it, stamped with its epoch, and every later write is a
//! compare-and-set on the revision it last wrote, so once another owner has loaded the session
//! (or an operator replaced it) the old owner's writes are refused. Operator writes ([`put`],
//! [`rotate`]) keep the stamp of the owner that wrote last.
//!
//! [`put`]: SessionStore::put
//! [`rotate`]: SessionStore::rotate

use async_nats::jetstream::kv;
use bytes::Bytes;
use futures::TryStreamExt;

use super::{SessionError, SessionSnapshot, seal_snapshot, unseal_snapshot};
use crate::bus::{BUCKET_SESSIONS, Bus};
use crate::cluster::fenced::{FencedError, FencedKv, FencedWriter, Owner, StateKind};
use crate::keys::MasterKey;

/// Why the session store failed. Never carries key or session bytes.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open KV bucket {BUCKET_SESSIONS} (run the bus set-up first): {message}")]
    Open { message: String },
    #[error(
        "account id {account:?} cannot be a key of {BUCKET_SESSIONS}: use letters, digits, \
         '-', '_', '=', '/' and '.'"
    )]
    BadAccountId { account: String },
    #[error("cannot {op} the session of account {account} in {BUCKET_SESSIONS}: {message}")]
    Bus {
        op: &'static str,
        account: String,
        message: String,
    },
    #[error("cannot list the accounts in {BUCKET_SESSIONS}: {message}")]
    List { message: String },
    #[error(
        "account {account} already has a session in {BUCKET_SESSIONS}; refusing to replace it \
         (remove it first if a new login is meant)"
    )]
    AlreadyExists { account: String },
    #[error(transparent)]
    Session(#[from] SessionError),
    #[error(
        "key rotation stopped: the session of account {account} opens with neither the old nor \
         the new master key; nothing of it was changed"
    )]
    RotateUnopenable { account: String },
    /// The account has no session to load.
    #[error("account {account} has no session in {BUCKET_SESSIONS}")]
    NotFound { account: String },
    /// A fenced read or write failed, or was refused (a newer owner, a replaced session).
    #[error(transparent)]
    Fenced(#[from] FencedError),
}

/// What [`SessionStore::rotate`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RotateReport {
    /// Accounts re-sealed under the new key.
    pub resealed: Vec<String>,
    /// Accounts already sealed under the new key (an earlier, interrupted rotation).
    pub already_new: Vec<String>,
}

/// The `TG_SESSIONS` bucket with the master key that seals and opens its entries.
pub struct SessionStore {
    kv: kv::Store,
    fenced: FencedKv,
    master: MasterKey,
}

fn valid_key(account: &str) -> Result<(), StoreError> {
    if crate::cluster::fenced::valid_key(account) {
        Ok(())
    } else {
        Err(StoreError::BadAccountId {
            account: account.to_string(),
        })
    }
}

impl SessionStore {
    /// Opens the bucket (created by [`Bus::setup`]).
    pub async fn open(bus: &Bus, master: MasterKey) -> Result<SessionStore, StoreError> {
        let kv = bus
            .js
            .get_key_value(BUCKET_SESSIONS)
            .await
            .map_err(|e| StoreError::Open {
                message: e.to_string(),
            })?;
        let fenced = FencedKv::over(bus.js.clone(), kv.clone(), StateKind::Session);
        Ok(SessionStore { kv, fenced, master })
    }

    /// Seals `snapshot` for `account` and writes it whatever is stored (an operator's write: an
    /// import or a new login), keeping the stamp of the owner that wrote last; returns the KV
    /// revision. A live session of the account is refused its next write and must be loaded again.
    pub async fn put(&self, account: &str, snapshot: &SessionSnapshot) -> Result<u64, StoreError> {
        valid_key(account)?;
        let sealed = Bytes::from(seal_snapshot(&self.master, account, snapshot)?);
        Ok(self.fenced.put_as_admin(account, sealed).await?)
    }

    /// Seals `snapshot` for `account` (for the live session's fenced writes).
    pub(super) fn seal(
        &self,
        account: &str,
        snapshot: &SessionSnapshot,
    ) -> Result<Bytes, StoreError> {
        Ok(seal_snapshot(&self.master, account, snapshot)?.into())
    }

    /// Loads the session of `account` as its `owner`: claims the record (refused when a newer
    /// owner has written it) and returns the writer for the owner's later writes with the session.
    pub(super) async fn claim(
        &self,
        account: &str,
        owner: &Owner,
    ) -> Result<(FencedWriter, SessionSnapshot), StoreError> {
        valid_key(account)?;
        let mut opened = None;
        self.fenced
            .claim(account, owner, |stored| {
                let sealed = stored.ok_or_else(|| StoreError::NotFound {
                    account: account.to_string(),
                })?;
                opened = Some(unseal_snapshot(&self.master, account, sealed)?);
                Ok::<_, StoreError>(sealed.clone())
            })
            .await
            .and_then(|(writer, _)| match opened {
                Some(snapshot) => Ok((writer, snapshot)),
                None => Err(StoreError::NotFound {
                    account: account.to_string(),
                }),
            })
    }

    /// The fenced view of the bucket (for a session this process created).
    pub(super) fn fenced(&self) -> &FencedKv {
        &self.fenced
    }

    /// Seals `snapshot` for a new `account` and writes it, only if the account has no session yet
    /// (atomically, so two nodes cannot both create it); returns the KV revision.
    pub async fn create(
        &self,
        account: &str,
        snapshot: &SessionSnapshot,
    ) -> Result<u64, StoreError> {
        valid_key(account)?;
        let sealed = seal_snapshot(&self.master, account, snapshot)?;
        self.kv
            .create(account, sealed.into())
            .await
            .map_err(|e| match e.kind() {
                kv::CreateErrorKind::AlreadyExists => StoreError::AlreadyExists {
                    account: account.to_string(),
                },
                _ => StoreError::Bus {
                    op: "create",
                    account: account.to_string(),
                    message: e.to_string(),
                },
            })
    }

    /// Reads and opens the session of `account`; `None` when there is none.
    pub async fn get(&self, account: &str) -> Result<Option<SessionSnapshot>, StoreError> {
        valid_key(account)?;
        let sealed = self.kv.get(account).await.map_err(|e| StoreError::Bus {
            op: "read",
            account: account.to_string(),
            message: e.to_string(),
        })?;
        match sealed {
            None => Ok(None),
            Some(bytes) => Ok(Some(unseal_snapshot(&self.master, account, &bytes)?)),
        }
    }

    /// Whether `account` has a session, without opening it: one direct read, where listing
    /// every key would start a consumer (hundreds of concurrent lists hit the server's limit).
    pub async fn exists(&self, account: &str) -> Result<bool, StoreError> {
        valid_key(account)?;
        let entry = self.kv.entry(account).await.map_err(|e| StoreError::Bus {
            op: "read",
            account: account.to_string(),
            message: e.to_string(),
        })?;
        Ok(entry.is_some_and(|e| e.operation == kv::Operation::Put))
    }

    /// Removes the session of `account`, history included (purge, not a delete marker on top).
    pub async fn remove(&self, account: &str) -> Result<(), StoreError> {
        valid_key(account)?;
        self.kv.purge(account).await.map_err(|e| StoreError::Bus {
            op: "remove",
            account: account.to_string(),
            message: e.to_string(),
        })
    }

    /// The accounts that have a session, sorted.
    pub async fn accounts(&self) -> Result<Vec<String>, StoreError> {
        let list = |e: &dyn std::fmt::Display| StoreError::List {
            message: e.to_string(),
        };
        let mut keys: Vec<String> = self
            .kv
            .keys()
            .await
            .map_err(|e| list(&e))?
            .try_collect()
            .await
            .map_err(|e| list(&e))?;
        keys.sort();
        Ok(keys)
    }

    /// Re-seals every entry from `old` to `new`. First opens every entry (with `old`, or with `new`
    /// when an interrupted rotation already re-sealed it), so a key that fits neither stops the
    /// rotation before anything is written; writes compare-and-set on the revision read. Use a
    /// store opened with `new` afterwards.
    pub async fn rotate(
        &self,
        old: &MasterKey,
        new: &MasterKey,
    ) -> Result<RotateReport, StoreError> {
        let mut report = RotateReport::default();
        let mut pending = Vec::new();
        for account in self.accounts().await? {
            // From the stream leader, with the owner's stamp, which the re-sealed copy keeps.
            let latest = self
                .fenced
                .read(&account)
                .await
                .map_err(|e| StoreError::Bus {
                    op: "read",
                    account: account.clone(),
                    message: e.to_string(),
                })?;
            let Some(value) = &latest.value else {
                continue;
            };
            match unseal_snapshot(old, &account, value) {
                Ok(snapshot) => pending.push((account, latest, snapshot)),
                Err(_) if unseal_snapshot(new, &account, value).is_ok() => {
                    report.already_new.push(account)
                }
                Err(_) => return Err(StoreError::RotateUnopenable { account }),
            }
        }
        for (account, latest, snapshot) in pending {
            let sealed = Bytes::from(seal_snapshot(new, &account, &snapshot)?);
            // Compare-and-set on the revision read: a session that changed since is not
            // re-sealed from the older copy.
            self.fenced
                .replace_as_admin(&account, sealed, &latest)
                .await
                .map_err(|e| StoreError::Bus {
                    op: "re-seal",
                    account: account.clone(),
                    message: e.to_string(),
                })?;
            report.resealed.push(account);
        }
        Ok(report)
    }
}
