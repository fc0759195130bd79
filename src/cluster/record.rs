//! KV records changed only by compare-and-set, each write a raw JetStream publish carrying both
//! `Nats-Expected-Last-Subject-Sequence` (the revision the writer last saw) and `Nats-TTL`.
//!
//! Why raw publishes: async-nats' `create_with_ttl` falls back to an update *without* the TTL on a
//! deleted key, and `update` never carries one, so a lease written through them could live
//! forever. The TTL is clean-up only: nothing in `crate::cluster` treats an expired record as
//! free (the server's clock can jump; the deciding node's monotonic clock decides).

use std::time::Duration;

use async_nats::jetstream::kv::{self, Entry, Operation};
use async_nats::jetstream::message::PublishMessage;
use bytes::Bytes;
use futures::StreamExt;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::watch;

use crate::bus::Bus;

/// Why a record could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// Someone else wrote the key since `expected`: the write was not applied.
    #[error("{bucket}/{key} changed since revision {expected}; the write was refused")]
    Conflict {
        bucket: String,
        key: String,
        expected: u64,
    },
    /// The server did not say: the write may or may not have been applied (read it back).
    #[error(
        "writing {bucket}/{key} had no answer ({message}); it may or may not have been applied"
    )]
    Unknown {
        bucket: String,
        key: String,
        message: String,
    },
    #[error("cannot read {bucket}/{key}: {message}")]
    Read {
        bucket: String,
        key: String,
        message: String,
    },
    #[error("{bucket}/{key} at revision {revision} is not a valid record: {message}")]
    Corrupt {
        bucket: String,
        key: String,
        revision: u64,
        message: String,
    },
    #[error("cannot encode a record for {bucket}/{key}: {message}")]
    Encode {
        bucket: String,
        key: String,
        message: String,
    },
}

/// A record as last read: its value (`None` when deleted or expired) and the revision to expect
/// when writing it next (0 when the key has never been written, or its last trace is gone).
#[derive(Debug, Clone, PartialEq)]
pub struct Versioned<T> {
    pub value: Option<T>,
    pub revision: u64,
}

/// The CAS-only view of one KV bucket.
#[derive(Clone)]
pub struct Records {
    bus: Bus,
    store: kv::Store,
    bucket: String,
    ttl: Duration,
    timeout: Duration,
}

impl Records {
    /// Records in `bucket` (which must have per-message TTL enabled), written with `ttl`; a write
    /// with no answer within `timeout` is reported as [`RecordError::Unknown`].
    pub async fn open(
        bus: &Bus,
        bucket: &str,
        ttl: Duration,
        timeout: Duration,
    ) -> Result<Records, RecordError> {
        let store = bus
            .js
            .get_key_value(bucket)
            .await
            .map_err(|e| RecordError::Read {
                bucket: bucket.to_string(),
                key: String::new(),
                message: e.to_string(),
            })?;
        Ok(Records {
            bus: bus.clone(),
            store,
            bucket: bucket.to_string(),
            ttl,
            timeout,
        })
    }

    /// The underlying store (for watches).
    pub fn store(&self) -> &kv::Store {
        &self.store
    }

    /// Reads `key`. A read may come from a lagging replica: it is a hint for the next write,
    /// whose compare-and-set is what decides.
    pub async fn read<T: DeserializeOwned>(&self, key: &str) -> Result<Versioned<T>, RecordError> {
        let entry = self.store.entry(key).await.map_err(|e| RecordError::Read {
            bucket: self.bucket.clone(),
            key: key.to_string(),
            message: e.to_string(),
        })?;
        match entry {
            None => Ok(Versioned {
                value: None,
                revision: 0,
            }),
            Some(e) => self.decode(key, e.operation, &e.value, e.revision),
        }
    }

    /// Decodes one KV entry of this bucket (from a read or a watch).
    pub fn decode<T: DeserializeOwned>(
        &self,
        key: &str,
        operation: Operation,
        value: &[u8],
        revision: u64,
    ) -> Result<Versioned<T>, RecordError> {
        if operation != Operation::Put {
            return Ok(Versioned {
                value: None,
                revision,
            });
        }
        serde_json::from_slice(value)
            .map(|v| Versioned {
                value: Some(v),
                revision,
            })
            .map_err(|e| RecordError::Corrupt {
                bucket: self.bucket.clone(),
                key: key.to_string(),
                revision,
                message: e.to_string(),
            })
    }

    /// Writes `value` to `key` if its last revision is still `expected` (0: the key must not
    /// exist), to expire after the records' TTL unless written again; returns the new revision.
    pub async fn write<T: Serialize>(
        &self,
        key: &str,
        value: &T,
        expected: u64,
    ) -> Result<u64, RecordError> {
        self.write_with(key, value, expected, Some(self.ttl)).await
    }

    /// [`Records::write`] for a record that must never expire: an account claim is renewed by
    /// nobody (its node lease is), and one that vanished would read as never claimed, letting
    /// any node take the account with its epoch counted from zero again.
    pub async fn write_persistent<T: Serialize>(
        &self,
        key: &str,
        value: &T,
        expected: u64,
    ) -> Result<u64, RecordError> {
        self.write_with(key, value, expected, None).await
    }

    async fn write_with<T: Serialize>(
        &self,
        key: &str,
        value: &T,
        expected: u64,
        ttl: Option<Duration>,
    ) -> Result<u64, RecordError> {
        let payload = serde_json::to_vec(value).map_err(|e| RecordError::Encode {
            bucket: self.bucket.clone(),
            key: key.to_string(),
            message: e.to_string(),
        })?;
        let mut message = PublishMessage::build()
            .payload(Bytes::from(payload))
            .expected_last_subject_sequence(expected);
        if let Some(ttl) = ttl {
            message = message.ttl(ttl);
        }
        let subject = format!("$KV.{}.{key}", self.bucket);
        let unknown = |message: String| RecordError::Unknown {
            bucket: self.bucket.clone(),
            key: key.to_string(),
            message,
        };
        let publish = async {
            self.bus
                .js
                .send_publish(subject, message)
                .await?
                .await
                .map(|ack| ack.sequence)
        };
        match tokio::time::timeout(self.timeout, publish).await {
            Err(_) => Err(unknown(format!("no answer within {:?}", self.timeout))),
            Ok(Ok(revision)) => Ok(revision),
            Ok(Err(e)) if crate::bus::wrong_last_sequence(&e) => Err(RecordError::Conflict {
                bucket: self.bucket.clone(),
                key: key.to_string(),
                expected,
            }),
            Ok(Err(e)) => Err(unknown(e.to_string())),
        }
    }

    /// Hands every entry of the keys matching `pattern` to `apply`, from each key's latest value
    /// on, watching again whenever the watch ends (a lost connection), until `stop` is set or
    /// its sender dropped.
    pub async fn follow(
        &self,
        pattern: &str,
        mut stop: watch::Receiver<bool>,
        mut apply: impl FnMut(Entry) + Send,
    ) {
        loop {
            if *stop.borrow() {
                return;
            }
            let mut entries = match self.store.watch_with_history(pattern).await {
                Ok(w) => w,
                Err(e) => {
                    tracing::warn!(error = %e, bucket = %self.bucket, pattern, "cannot watch; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(500)) => continue,
                        _ = stop.changed() => return,
                    }
                }
            };
            loop {
                let entry = tokio::select! {
                    entry = entries.next() => entry,
                    _ = stop.changed() => return,
                };
                match entry {
                    Some(Ok(entry)) => apply(entry),
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, bucket = %self.bucket, pattern, "watch failed; watching again");
                        break;
                    }
                    None => break,
                }
            }
        }
    }
}
