//! Encryption at rest of the embedded server's JetStream store.
//!
//! `TG_RAW` and `TG_CLEAN` hold whole messages, chat titles and sender names, so the embedded
//! server encrypts its store (`cipher: chachapoly`) under a key derived from the master key
//! ([`KeyPurpose::NatsStore`], never the master key itself). The key reaches nats-server through
//! its environment: the config file written next to the store names it as `$VAR` (nats-server
//! resolves config variables from its environment), so it is neither in a file on disk nor on
//! the command line that every local user can read in `/proc`.
//!
//! After `keys rotate` the server is started once with the new key and the old one as
//! `prev_encryption_key`: nats-server then re-encrypts every stream under the new key on
//! recovery, and from then on the old key is not needed. A plaintext store (from a version
//! before this one) is encrypted by nats-server on the first start with a key.
//!
//! A server started with a key that does not open a stream skips that stream, and tgingest's
//! set-up would then create it afresh over the old files: the messages would be lost. So the
//! store remembers which key it is under (`store-key.id`, a keyed hash that reveals nothing of
//! the key), and a start with another key is refused before nats-server sees the store.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::keys::{KeyPurpose, MasterKey};

/// Environment variable through which nats-server gets the store key.
pub const STORE_KEY_ENV: &str = "TGINGEST_NATS_STORE_KEY";
/// Environment variable through which nats-server gets the previous store key (rotation).
pub const PREV_STORE_KEY_ENV: &str = "TGINGEST_NATS_STORE_PREV_KEY";
/// The file in the store dir naming (by a keyed hash) the key the store is encrypted under.
pub const KEY_ID_FILE: &str = "store-key.id";
/// The config file written in the store dir for an encrypted embedded server (no keys in it).
pub const CONFIG_FILE: &str = "nats-server.conf";

/// Domain of the hash that names a store key without revealing it.
const KEY_ID_CONTEXT: &str = "tgingest 2026-12 nats store key id v1";

/// The JetStream store key: 32 secret bytes; `Debug` never shows them, and they are wiped on drop.
#[derive(Clone)]
pub struct StoreKey([u8; 32]);

impl fmt::Debug for StoreKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StoreKey(id {})", self.id())
    }
}

impl Drop for StoreKey {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

impl StoreKey {
    /// The store key that belongs to `master`.
    pub fn derive(master: &MasterKey) -> StoreKey {
        StoreKey(*master.derive(KeyPurpose::NatsStore).bytes())
    }

    /// A name for the key that reveals nothing of it (what `store-key.id` holds).
    pub fn id(&self) -> String {
        let hash = blake3::keyed_hash(&blake3::derive_key(KEY_ID_CONTEXT, &self.0), b"id");
        hex::encode(&hash.as_bytes()[..16])
    }

    /// The key as nats-server takes it (a string it stretches itself).
    fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

/// How the server encrypts its store: the current key, and during a rotation the previous one.
#[derive(Clone, Debug)]
pub struct StoreEncryption {
    /// The key the store is (or will be) under.
    pub key: StoreKey,
    /// The key it was under before `keys rotate`; nats-server re-encrypts what it still opens.
    pub previous: Option<StoreKey>,
}

/// Why an encrypted store cannot be opened with the keys given.
#[derive(Debug, thiserror::Error)]
pub enum StoreKeyError {
    #[error(
        "the JetStream store in {dir} is encrypted under another master key (store key id {found}, \
         this master key gives {expected}): start with the master key it was written under. If \
         `keys rotate` was interrupted, run it again with the old key as the current key; it \
         finishes re-encrypting the store"
    )]
    OtherKey {
        dir: PathBuf,
        found: String,
        expected: String,
    },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl StoreEncryption {
    /// Just the master key's store key (a normal start).
    pub fn new(master: &MasterKey) -> Self {
        StoreEncryption {
            key: StoreKey::derive(master),
            previous: None,
        }
    }

    /// The store key of `new`, with the one of `old` as previous key (`keys rotate`).
    pub fn rotating(old: &MasterKey, new: &MasterKey) -> Self {
        StoreEncryption {
            key: StoreKey::derive(new),
            previous: Some(StoreKey::derive(old)),
        }
    }

    /// Refuses to start when the store is recorded as under a key that is neither the current
    /// nor the previous one. A store without the record (new, plaintext, or from before the
    /// record existed) is let through: nats-server encrypts plaintext on start.
    pub fn check_store(&self, store_dir: &Path) -> Result<(), StoreKeyError> {
        let path = store_dir.join(KEY_ID_FILE);
        let found = match std::fs::read_to_string(&path) {
            Ok(text) => text.trim().to_string(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(source) => return Err(StoreKeyError::Read { path, source }),
        };
        let known = std::iter::once(&self.key).chain(self.previous.as_ref());
        if known.map(StoreKey::id).any(|id| id == found) {
            return Ok(());
        }
        Err(StoreKeyError::OtherKey {
            dir: store_dir.to_path_buf(),
            found,
            expected: self.key.id(),
        })
    }

    /// Records that the store is now under the current key (after the server has recovered,
    /// and so re-encrypted, every stream).
    pub fn record(&self, store_dir: &Path) -> Result<(), StoreKeyError> {
        let path = store_dir.join(KEY_ID_FILE);
        let write = |source| StoreKeyError::Write {
            path: path.clone(),
            source,
        };
        let mut tmp = tempfile::NamedTempFile::new_in(store_dir).map_err(write)?;
        writeln!(tmp, "{}", self.key.id()).map_err(write)?;
        tmp.as_file().sync_all().map_err(write)?;
        tmp.persist(&path).map_err(|e| write(e.error))?;
        Ok(())
    }

    /// The environment that carries the keys to nats-server.
    pub(super) fn env(&self) -> Vec<(&'static str, String)> {
        let mut env = vec![(STORE_KEY_ENV, self.key.to_hex())];
        if let Some(previous) = &self.previous {
            env.push((PREV_STORE_KEY_ENV, previous.to_hex()));
        }
        env
    }

    /// The config of an embedded server: its name and encrypted store, the keys as `$VARS`.
    pub(super) fn config_file(&self, name: &str, store_dir: &Path) -> String {
        // nats-server's config strings take JSON's quoting.
        let quote = |s: &str| serde_json::Value::from(s).to_string();
        let prev = match self.previous {
            Some(_) => format!("  prev_encryption_key: ${PREV_STORE_KEY_ENV}\n"),
            None => String::new(),
        };
        format!(
            "# Written by tgingest at each start of its embedded nats-server. The keys are not\n\
             # here: nats-server reads them from its environment.\n\
             server_name: {name}\n\
             jetstream {{\n  store_dir: {dir}\n  cipher: chachapoly\n  key: ${STORE_KEY_ENV}\n{prev}}}\n",
            name = quote(name),
            dir = quote(&store_dir.to_string_lossy()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_key_is_not_the_master_key_and_debug_hides_it() {
        let master = MasterKey::from_bytes([9; 32]);
        let key = StoreKey::derive(&master);
        assert_ne!(key.0, [9; 32]);
        let shown = format!("{:?}", StoreEncryption::rotating(&master, &master));
        assert!(!shown.contains(&key.to_hex()), "{shown}");
        assert!(!shown.contains(&hex::encode([9u8; 32])), "{shown}");
    }

    #[test]
    fn config_file_names_the_keys_only_as_variables() {
        let enc = StoreEncryption::rotating(
            &MasterKey::from_bytes([1; 32]),
            &MasterKey::from_bytes([2; 32]),
        );
        let text = enc.config_file("n\"1", Path::new("/data/nats"));
        assert!(text.contains("key: $TGINGEST_NATS_STORE_KEY"), "{text}");
        assert!(text.contains("prev_encryption_key: $TGINGEST_NATS_STORE_PREV_KEY"));
        assert!(text.contains(r#"server_name: "n\"1""#), "{text}");
        for (_, value) in enc.env() {
            assert!(!text.contains(&value));
        }
    }

    #[test]
    fn a_store_recorded_under_another_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let a = MasterKey::from_bytes([1; 32]);
        let b = MasterKey::from_bytes([2; 32]);
        StoreEncryption::new(&a).check_store(dir.path()).unwrap();
        StoreEncryption::new(&a).record(dir.path()).unwrap();
        StoreEncryption::new(&a).check_store(dir.path()).unwrap();
        StoreEncryption::rotating(&a, &b)
            .check_store(dir.path())
            .unwrap();
        let err = StoreEncryption::new(&b)
            .check_store(dir.path())
            .unwrap_err();
        assert!(matches!(err, StoreKeyError::OtherKey { .. }), "{err}");
    }
}
