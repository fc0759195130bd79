//! The accounts registry: the JetStream KV bucket `TG_ACCOUNTS`, one JSON record per account id,
//! saying how the account was added, whether an operator wants it running, and who consented to
//! its ingestion. Every node reads it, so any node can tell which accounts may ingest.
//!
//! A record never holds a phone number: at most a keyed hash of it ([`phone_hash`]), enough to
//! find the login budget of the number and useless to anyone without the master key.

use async_nats::jetstream::kv;
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use super::Lifecycle;
use crate::bus::{BUCKET_ACCOUNTS, Bus};
use crate::pipeline::account::EndedSink;

/// How an account came to tgingest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AddedVia {
    /// An interactive login (phone, code, maybe 2FA) through the admin API.
    Login,
    /// A Telethon `StringSession`.
    TelethonImport,
    /// A Pyrogram session string.
    PyrogramImport,
}

/// What an operator wants the account to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Desired {
    /// Ingest (once consent is recorded).
    Active,
    /// Do not ingest until resumed.
    Paused,
}

/// Who agreed, when, and to what: without it an account never ingests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Consent {
    /// The person or ticket that gave consent, as the operator typed it.
    pub by: String,
    /// When it was recorded (microseconds since the epoch).
    pub at_us: i64,
    /// What was consented to, in the operator's words.
    pub scope: String,
}

/// One account as the registry knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountRecord {
    /// Telegram user id of the account (the registry key).
    pub account_id: String,
    /// When the account was added (microseconds since the epoch).
    pub added_at_us: i64,
    pub added_via: AddedVia,
    pub desired: Desired,
    pub consent: Option<Consent>,
    pub display_name: Option<String>,
    pub username: Option<String>,
    /// Keyed hash of the phone number used to log in, if the account was added by a login.
    pub phone_hash: Option<String>,
    /// Set when Telegram ended the session for good (revoked, or its key used twice): no node
    /// starts the account again until a new login or import clears it. Kept in the registry,
    /// not only in the actor that saw it, so a restart or another node does not reconnect a
    /// dead key (and a duplicated one twice).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended: Option<Ended>,
    /// The account group whose principals' grants apply to it (see [`crate::admin::principals`]);
    /// none: the group `default`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

/// How and when a session ended for good.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ended {
    /// `revoked` (with the RPC error) or `duplicated`.
    #[serde(flatten)]
    pub state: Lifecycle,
    /// When the account's actor stopped on it (microseconds since the epoch).
    pub at_us: i64,
}

impl AccountRecord {
    /// A fresh record: active, without consent (so it waits in `pending_consent`).
    pub fn new(account_id: &str, added_via: AddedVia) -> Self {
        AccountRecord {
            account_id: account_id.to_string(),
            added_at_us: crate::event::now_us(),
            added_via,
            desired: Desired::Active,
            consent: None,
            display_name: None,
            username: None,
            phone_hash: None,
            ended: None,
            group: None,
        }
    }

    /// The account's group (`default` when it has no label).
    pub fn group(&self) -> &str {
        self.group
            .as_deref()
            .unwrap_or(crate::admin::principals::DEFAULT_GROUP)
    }

    /// Whether the registry lets this account ingest: active, consented, and its session not
    /// ended by Telegram.
    pub fn may_run(&self) -> bool {
        self.desired == Desired::Active && self.consent.is_some() && self.ended.is_none()
    }
}

/// Why a registry operation failed. Names the account and what to do; never holds a phone number.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("cannot open KV bucket {BUCKET_ACCOUNTS} (run the bus set-up first): {message}")]
    Open { message: String },
    #[error(
        "account id {account:?} is not valid: use the account's numeric Telegram user id \
         (digits only)"
    )]
    BadAccountId { account: String },
    #[error(
        "account {account} is not in the registry ({BUCKET_ACCOUNTS}); see `tgingest accounts list`"
    )]
    NotFound { account: String },
    #[error(
        "account {account} is already in the registry; remove it first (`tgingest accounts remove \
         {account}`) to add it again"
    )]
    Exists { account: String },
    #[error("account {account} was changed concurrently by another request; try again")]
    Conflict { account: String },
    #[error("cannot {op} account {account} in {BUCKET_ACCOUNTS}: {message}")]
    Bus {
        op: &'static str,
        account: String,
        message: String,
    },
    #[error("the registry record of account {account} is not valid JSON: {message}")]
    Decode { account: String, message: String },
    #[error("cannot list the accounts in {BUCKET_ACCOUNTS}: {message}")]
    List { message: String },
}

/// Checks that `account` is a Telegram user id: digits only, no leading zero, at most 20 digits.
pub fn valid_account_id(account: &str) -> Result<(), RegistryError> {
    let ok = !account.is_empty()
        && account.len() <= 20
        && !account.starts_with('0')
        && account.bytes().all(|b| b.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(RegistryError::BadAccountId {
            account: account.chars().take(32).collect(),
        })
    }
}

/// The keyed hash that stands for a phone number (digits only, so `+49 30 1234` and
/// `0049301234`… differ, but `+4930 1234` and `4930-1234` do not). `key` is derived from the
/// master key; the full 32-byte hash is hex-encoded.
pub fn phone_hash(key: &[u8; 32], phone: &str) -> String {
    let digits: String = phone.chars().filter(char::is_ascii_digit).collect();
    let digits = digits.trim_start_matches("00");
    hex::encode(blake3::keyed_hash(key, digits.as_bytes()).as_bytes())
}

/// The `TG_ACCOUNTS` bucket.
#[derive(Clone)]
pub struct Registry {
    kv: kv::Store,
    client: async_nats::Client,
}

impl Registry {
    /// Opens the bucket (created by [`Bus::setup`]).
    pub async fn open(bus: &Bus) -> Result<Registry, RegistryError> {
        let kv = bus
            .js
            .get_key_value(BUCKET_ACCOUNTS)
            .await
            .map_err(|e| RegistryError::Open {
                message: e.to_string(),
            })?;
        Ok(Registry {
            kv,
            client: bus.client.clone(),
        })
    }

    fn bus_err(op: &'static str, account: &str, e: impl std::fmt::Display) -> RegistryError {
        RegistryError::Bus {
            op,
            account: account.to_string(),
            message: e.to_string(),
        }
    }

    fn decode(account: &str, bytes: &[u8]) -> Result<AccountRecord, RegistryError> {
        serde_json::from_slice(bytes).map_err(|e| RegistryError::Decode {
            account: account.to_string(),
            message: e.to_string(),
        })
    }

    fn encode(record: &AccountRecord) -> Result<bytes::Bytes, RegistryError> {
        serde_json::to_vec(record)
            .map(Into::into)
            .map_err(|e| RegistryError::Decode {
                account: record.account_id.clone(),
                message: e.to_string(),
            })
    }

    /// The record of `account` and its KV revision, if there is one.
    pub async fn get_with_revision(
        &self,
        account: &str,
    ) -> Result<Option<(AccountRecord, u64)>, RegistryError> {
        valid_account_id(account)?;
        // From the leader: an operator's next step (consent after import) may come through
        // another node right after the write.
        match crate::bus::latest_entry(&self.kv, account)
            .await
            .map_err(|e| Self::bus_err("read", account, e))?
        {
            Some((value, revision)) => Ok(Some((Self::decode(account, &value)?, revision))),
            None => Ok(None),
        }
    }

    /// The record of `account`, if there is one.
    pub async fn get(&self, account: &str) -> Result<Option<AccountRecord>, RegistryError> {
        Ok(self.get_with_revision(account).await?.map(|(r, _)| r))
    }

    /// Adds a new record; fails with [`RegistryError::Exists`] when the account is known.
    pub async fn create(&self, record: &AccountRecord) -> Result<u64, RegistryError> {
        let account = record.account_id.as_str();
        valid_account_id(account)?;
        let body = Self::encode(record)?;
        match self.kv.create(account, body).await {
            Ok(revision) => Ok(revision),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                Err(RegistryError::Exists {
                    account: account.to_string(),
                })
            }
            Err(e) => Err(Self::bus_err("create", account, e)),
        }
    }

    /// Changes the record of `account` with `change`, compare-and-set on the revision read (one
    /// retry on a concurrent change); returns the new record.
    pub async fn update(
        &self,
        account: &str,
        change: impl Fn(&mut AccountRecord),
    ) -> Result<AccountRecord, RegistryError> {
        for _ in 0..3 {
            let Some((mut record, revision)) = self.get_with_revision(account).await? else {
                return Err(RegistryError::NotFound {
                    account: account.to_string(),
                });
            };
            change(&mut record);
            let body = Self::encode(&record)?;
            match self.kv.update(account, body, revision).await {
                Ok(_) => return Ok(record),
                Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => continue,
                Err(e) => return Err(Self::bus_err("update", account, e)),
            }
        }
        Err(RegistryError::Conflict {
            account: account.to_string(),
        })
    }

    /// Removes the record of `account`, history included.
    pub async fn remove(&self, account: &str) -> Result<(), RegistryError> {
        valid_account_id(account)?;
        self.kv
            .purge(account)
            .await
            .map_err(|e| Self::bus_err("remove", account, e))
    }

    /// Every record, sorted by account id (numerically).
    pub async fn list(&self) -> Result<Vec<AccountRecord>, RegistryError> {
        let list = |e: &dyn std::fmt::Display| RegistryError::List {
            message: e.to_string(),
        };
        // One pass over the bucket, not a request per account: the cluster's controller lists
        // every round.
        let entries = crate::bus::latest_entries(&self.client, &self.kv)
            .await
            .map_err(|e| list(&e))?;
        let mut records = Vec::with_capacity(entries.len());
        for (key, value, _) in entries {
            records.push(Self::decode(&key, &value)?);
        }
        records.sort_by(|a, b| {
            (a.account_id.len(), &a.account_id).cmp(&(b.account_id.len(), &b.account_id))
        });
        Ok(records)
    }
}

/// Marks an account's registry record when its session ended for good (the account actors'
/// [`EndedSink`]): the actor waits for the write, so once it is gone every node sees the mark.
pub struct MarkEnded(pub Registry);

impl EndedSink for MarkEnded {
    fn ended<'a>(&'a self, account_id: &'a str, state: &'a Lifecycle) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let ended = Ended {
                state: state.clone(),
                at_us: crate::event::now_us(),
            };
            let hashed = crate::telemetry::hash_id(account_id);
            match self
                .0
                .update(account_id, |r| r.ended = Some(ended.clone()))
                .await
            {
                Ok(_) => {}
                // A simulated account from the config has no record: nothing to mark.
                Err(RegistryError::NotFound { .. }) => {}
                Err(e) => tracing::error!(account = %hashed, error = %e,
                    "cannot record in the registry that the session ended; a restart may try it again"),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ended_session_keeps_the_account_from_running_and_survives_json() {
        let mut r = AccountRecord::new("1000000", AddedVia::Login);
        r.consent = Some(Consent {
            by: "ops".into(),
            at_us: 1,
            scope: "all".into(),
        });
        r.ended = Some(Ended {
            state: Lifecycle::Revoked {
                reason: "SESSION_REVOKED".into(),
            },
            at_us: 7,
        });
        assert!(!r.may_run());
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(
            json["ended"],
            serde_json::json!({"state": "revoked", "reason": "SESSION_REVOKED", "at_us": 7})
        );
        let back: AccountRecord = serde_json::from_value(json).unwrap();
        assert_eq!(back, r);
        // Records written before the field existed still read, as not ended.
        let mut old = serde_json::to_value(&r).unwrap();
        old.as_object_mut().unwrap().remove("ended");
        let old: AccountRecord = serde_json::from_value(old).unwrap();
        assert_eq!(old.ended, None);
        assert!(old.may_run());
    }

    #[test]
    fn account_ids_are_user_ids() {
        assert!(valid_account_id("1000000").is_ok());
        for bad in ["", "0123", "12a", "+491", "1.2", "123456789012345678901"] {
            assert!(valid_account_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn phone_hash_ignores_formatting_and_hides_the_number() {
        let key = [7u8; 32];
        let a = phone_hash(&key, "+49 30 1234567");
        assert_eq!(a, phone_hash(&key, "4930-1234567"));
        assert_eq!(a, phone_hash(&key, "00 49 30 1234567"));
        assert_ne!(a, phone_hash(&key, "+49 30 1234568"));
        assert_ne!(a, phone_hash(&[8u8; 32], "+49 30 1234567"));
        assert!(!a.contains("1234567"));
        assert_eq!(a.len(), 64);
    }

    #[test]
    fn a_new_record_waits_for_consent() {
        let mut r = AccountRecord::new("1000000", AddedVia::PyrogramImport);
        assert!(!r.may_run());
        r.consent = Some(Consent {
            by: "ops".into(),
            at_us: 1,
            scope: "all".into(),
        });
        assert!(r.may_run());
        r.desired = Desired::Paused;
        assert!(!r.may_run());
    }
}
