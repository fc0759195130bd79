//! The event log's chain key: 32 random bytes made once per log and kept sealed under the master
//! key in `<eventlog dir>/chain.key`.
//!
//! Why not derive it from the master key: then rotating the master key would leave every record
//! written so far unverifiable. Sealed, the chain key itself never changes; a rotation only
//! re-seals the file. Logs made before this file existed were chained with the key derived from
//! the master key; opening such a log adopts that key and writes it sealed, so they still verify.
//!
//! Layout: `format (1 byte) ‖ nonce (24 bytes) ‖ ciphertext (32 bytes) ‖ tag (16 bytes)`,
//! XChaCha20-Poly1305 under `MasterKey::derive(KeyPurpose::ChainKeySeal)`, AAD `format ‖ purpose`.

use std::fmt;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

use super::error::EventLogError;
use super::store::newest_record_fits;
use crate::keys::{KeyPurpose, MasterKey};

/// Name of the sealed chain key file inside the event log directory.
pub const CHAIN_KEY_FILE: &str = "chain.key";
const FORMAT_V1: u8 = 1;
const NONCE_LEN: usize = 24;
const KEY_LEN: usize = 32;
const TAG_LEN: usize = 16;
const SEALED_LEN: usize = 1 + NONCE_LEN + KEY_LEN + TAG_LEN;
const AAD_PURPOSE: &[u8] = b"tgingest eventlog chain key";

/// How a chain key was had when the log was opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainKeyOrigin {
    /// Opened from the sealed file.
    Opened,
    /// Made now for a new (or empty) log, and written sealed.
    Created,
    /// The log predates the file: the key derived from the master key was adopted and written.
    Migrated,
}

/// Under which key the chain key file was found when a rotation began.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SealedUnder {
    /// The current (old) master key: it still has to be re-sealed.
    Old,
    /// The new master key already (an earlier rotation got this far).
    New,
    /// No file yet: the key (legacy-derived for an existing log, random for none) is to be
    /// written under the new master key.
    NoFile,
}

/// The 32-byte key of the event log's hash chain; `Debug` never shows it, and it is wiped on drop.
#[derive(Clone)]
pub struct ChainKey([u8; KEY_LEN]);

impl fmt::Debug for ChainKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ChainKey(***)")
    }
}

impl Drop for ChainKey {
    fn drop(&mut self) {
        wipe(&mut self.0);
    }
}

fn wipe(bytes: &mut [u8]) {
    zeroize::Zeroize::zeroize(bytes);
}

/// The path of the chain key file of the log in `dir`.
pub fn chain_key_path(dir: &Path) -> PathBuf {
    dir.join(CHAIN_KEY_FILE)
}

impl ChainKey {
    /// The raw key, for [`super::EventLog::open`] and [`super::verify_dir`].
    pub fn bytes(&self) -> [u8; KEY_LEN] {
        self.0
    }

    fn generate() -> ChainKey {
        ChainKey(rand::random())
    }

    /// The key logs made before `chain.key` existed were chained with.
    fn legacy(master: &MasterKey) -> ChainKey {
        ChainKey(*master.derive(KeyPurpose::EventLogChain).bytes())
    }

    /// The chain key of the log in `dir`, for the node that writes it: opens the sealed file; with
    /// none, adopts the legacy key of an existing log (after checking its newest record was
    /// chained with it) or makes a random key for a new one, and writes it sealed (0600).
    pub fn open_or_create(
        dir: &Path,
        master: &MasterKey,
    ) -> Result<(ChainKey, ChainKeyOrigin), EventLogError> {
        let path = chain_key_path(dir);
        if let Some(sealed) = read_sealed(&path)? {
            return Ok((unseal(&path, master, &sealed)?, ChainKeyOrigin::Opened));
        }
        let (key, origin) = match Self::for_missing_file(dir, master)? {
            (key, true) => (key, ChainKeyOrigin::Migrated),
            (key, false) => (key, ChainKeyOrigin::Created),
        };
        std::fs::create_dir_all(dir).map_err(|source| EventLogError::ChainKeyWrite {
            path: path.clone(),
            source,
        })?;
        let sealed = seal(master, &key)?;
        if write_new(&path, &sealed)? {
            Ok((key, origin))
        } else {
            // Another process wrote one first; that one counts.
            let sealed = read_sealed(&path)?.ok_or_else(|| EventLogError::ChainKeyRead {
                path: path.clone(),
                source: std::io::ErrorKind::NotFound.into(),
            })?;
            Ok((unseal(&path, master, &sealed)?, ChainKeyOrigin::Opened))
        }
    }

    /// The chain key of the log in `dir`, read only (for `tgingest audit verify`): the sealed file,
    /// or, with none, the legacy key derived from `master`.
    pub fn open(dir: &Path, master: &MasterKey) -> Result<ChainKey, EventLogError> {
        let path = chain_key_path(dir);
        match read_sealed(&path)? {
            Some(sealed) => unseal(&path, master, &sealed),
            None => Ok(Self::legacy(master)),
        }
    }

    /// The chain key at the start of a master-key rotation, from a file sealed under `old` or
    /// (after an interrupted rotation) `new`; writes nothing.
    pub fn open_for_rotation(
        dir: &Path,
        old: &MasterKey,
        new: &MasterKey,
    ) -> Result<(ChainKey, SealedUnder), EventLogError> {
        let path = chain_key_path(dir);
        let Some(sealed) = read_sealed(&path)? else {
            let (key, _) = Self::for_missing_file(dir, old)?;
            return Ok((key, SealedUnder::NoFile));
        };
        if let Ok(key) = unseal(&path, old, &sealed) {
            return Ok((key, SealedUnder::Old));
        }
        match unseal(&path, new, &sealed) {
            Ok(key) => Ok((key, SealedUnder::New)),
            Err(EventLogError::ChainKeyWrongMaster { path }) => {
                Err(EventLogError::ChainKeyNeither { path })
            }
            Err(e) => Err(e),
        }
    }

    /// Writes this key sealed under `master` to the chain key file of `dir`, replacing any
    /// (written to a temporary file, synced, then renamed, so a crash leaves the old or the new).
    pub fn seal_to(&self, dir: &Path, master: &MasterKey) -> Result<(), EventLogError> {
        let path = chain_key_path(dir);
        let tmp = dir.join(format!("{CHAIN_KEY_FILE}.tmp"));
        let write_err = |source| EventLogError::ChainKeyWrite {
            path: path.clone(),
            source,
        };
        let sealed = seal(master, self)?;
        let _ = std::fs::remove_file(&tmp);
        write_file(&tmp, &sealed).map_err(write_err)?;
        std::fs::rename(&tmp, &path).map_err(write_err)?;
        sync_dir(dir).map_err(write_err)
    }

    /// This key sealed under `master` for the copy kept in JetStream, bound to `node_id`: a copy
    /// moved to another node's entry does not open, so one node's chain cannot pass as another's.
    pub fn seal_for_node(
        &self,
        master: &MasterKey,
        node_id: &str,
    ) -> Result<Vec<u8>, EventLogError> {
        seal_bound(master, self, &node_binding(node_id))
    }

    /// Opens a copy made by [`ChainKey::seal_for_node`] for `node_id`; `place` names where it was
    /// read (for the error).
    pub fn unseal_for_node(
        place: &Path,
        master: &MasterKey,
        node_id: &str,
        sealed: &[u8],
    ) -> Result<ChainKey, EventLogError> {
        unseal_bound(place, master, sealed, &node_binding(node_id))
    }

    /// Whether two chain keys are the same key (compared in constant time: they are secrets).
    pub fn same_as(&self, other: &ChainKey) -> bool {
        crate::keys::same_secret(&self.0, &other.0)
    }

    /// The key for a log without a chain key file, and whether it is the legacy one.
    fn for_missing_file(dir: &Path, master: &MasterKey) -> Result<(ChainKey, bool), EventLogError> {
        let legacy = Self::legacy(master);
        match newest_record_fits(dir, &legacy.0)? {
            None => Ok((Self::generate(), false)),
            Some(true) => Ok((legacy, true)),
            Some(false) => Err(EventLogError::ChainKeyMissing {
                dir: dir.to_path_buf(),
            }),
        }
    }
}

fn cipher(master: &MasterKey) -> XChaCha20Poly1305 {
    let key = master.derive(KeyPurpose::ChainKeySeal);
    XChaCha20Poly1305::new(key.bytes().into())
}

fn seal(master: &MasterKey, key: &ChainKey) -> Result<Vec<u8>, EventLogError> {
    seal_bound(master, key, b"")
}

fn unseal(path: &Path, master: &MasterKey, sealed: &[u8]) -> Result<ChainKey, EventLogError> {
    unseal_bound(path, master, sealed, b"")
}

/// The associated data of a sealed key: format, purpose, and what the copy is bound to (nothing
/// for the file; the node id for the copy in JetStream).
fn aad(format: u8, bound_to: &[u8]) -> Vec<u8> {
    [&[format][..], AAD_PURPOSE, bound_to].concat()
}

fn seal_bound(
    master: &MasterKey,
    key: &ChainKey,
    bound_to: &[u8],
) -> Result<Vec<u8>, EventLogError> {
    let nonce: [u8; NONCE_LEN] = rand::random();
    let aad = aad(FORMAT_V1, bound_to);
    let ciphertext = cipher(master)
        .encrypt(
            &XNonce::from(nonce),
            Payload {
                msg: &key.0,
                aad: &aad,
            },
        )
        // Only a plaintext beyond the cipher's limit fails; 32 bytes never do.
        .map_err(|_| EventLogError::ChainKeyWrite {
            path: PathBuf::from(CHAIN_KEY_FILE),
            source: std::io::Error::other("encryption failed"),
        })?;
    Ok([&[FORMAT_V1][..], &nonce, &ciphertext].concat())
}

fn unseal_bound(
    path: &Path,
    master: &MasterKey,
    sealed: &[u8],
    bound_to: &[u8],
) -> Result<ChainKey, EventLogError> {
    let format = sealed.first().copied().unwrap_or(0);
    if sealed.len() != SEALED_LEN || format != FORMAT_V1 {
        return Err(EventLogError::ChainKeyMalformed {
            path: path.to_path_buf(),
            len: sealed.len(),
            format,
        });
    }
    let (nonce, ciphertext) = sealed[1..].split_at(NONCE_LEN);
    let aad = aad(format, bound_to);
    let mut plain = cipher(master)
        .decrypt(
            XNonce::from_slice(nonce),
            Payload {
                msg: ciphertext,
                aad: &aad,
            },
        )
        .map_err(|_| EventLogError::ChainKeyWrongMaster {
            path: path.to_path_buf(),
        })?;
    let mut key = [0u8; KEY_LEN];
    // The tag checked out, so the plaintext has the length sealed: 32 bytes.
    key.copy_from_slice(&plain[..KEY_LEN]);
    wipe(&mut plain);
    Ok(ChainKey(key))
}

/// What a JetStream copy is bound to: the node whose chain it keys.
fn node_binding(node_id: &str) -> Vec<u8> {
    [&b" of node "[..], node_id.as_bytes()].concat()
}

fn read_sealed(path: &Path) -> Result<Option<Vec<u8>>, EventLogError> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(EventLogError::ChainKeyRead {
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn write_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Writes `path` only if it does not exist yet (temporary file, then a hard link, which fails on
/// an existing name); returns whether it was written.
fn write_new(path: &Path, bytes: &[u8]) -> Result<bool, EventLogError> {
    let write_err = |source| EventLogError::ChainKeyWrite {
        path: path.to_path_buf(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        "{CHAIN_KEY_FILE}.new-{}-{:016x}",
        std::process::id(),
        rand::random::<u64>()
    ));
    write_file(&tmp, bytes).map_err(write_err)?;
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            sync_dir(dir).map_err(write_err)?;
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(write_err(e)),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::eventlog::{AuditEntry, Durability, EventLog, verify_dir};

    fn entry() -> AuditEntry {
        AuditEntry {
            action: "test".into(),
            actor: "test".into(),
            account_id: None,
            details: Default::default(),
        }
    }

    async fn write_log(dir: &Path, key: [u8; 32]) {
        let log = EventLog::open(dir, key).unwrap();
        log.audit(&entry(), Durability::Flushed).await.unwrap();
    }

    #[test]
    fn a_new_log_gets_a_random_key_sealed_in_a_private_file() {
        let dir = tempfile::tempdir().unwrap();
        let master = MasterKey::from_bytes([1; 32]);
        let (key, origin) = ChainKey::open_or_create(dir.path(), &master).unwrap();
        assert_eq!(origin, ChainKeyOrigin::Created);
        assert_ne!(key.bytes(), ChainKey::legacy(&master).bytes());
        let path = chain_key_path(dir.path());
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let sealed = std::fs::read(&path).unwrap();
        assert_eq!(sealed.len(), SEALED_LEN);
        assert!(!sealed.windows(8).any(|w| w == &key.bytes()[..8]));
        let (again, origin) = ChainKey::open_or_create(dir.path(), &master).unwrap();
        assert_eq!(
            (again.bytes(), origin),
            (key.bytes(), ChainKeyOrigin::Opened)
        );
        assert_eq!(
            ChainKey::open(dir.path(), &master).unwrap().bytes(),
            key.bytes()
        );
        assert_eq!(format!("{key:?}"), "ChainKey(***)");
    }

    #[test]
    fn another_master_key_or_a_flipped_byte_does_not_open_it() {
        let dir = tempfile::tempdir().unwrap();
        ChainKey::open_or_create(dir.path(), &MasterKey::from_bytes([1; 32])).unwrap();
        let err = ChainKey::open(dir.path(), &MasterKey::from_bytes([2; 32])).unwrap_err();
        assert!(
            matches!(err, EventLogError::ChainKeyWrongMaster { .. }),
            "{err}"
        );
        let path = chain_key_path(dir.path());
        let mut sealed = std::fs::read(&path).unwrap();
        sealed[40] ^= 1;
        std::fs::write(&path, &sealed).unwrap();
        let err = ChainKey::open(dir.path(), &MasterKey::from_bytes([1; 32])).unwrap_err();
        assert!(
            matches!(err, EventLogError::ChainKeyWrongMaster { .. }),
            "{err}"
        );
        std::fs::write(&path, &sealed[..10]).unwrap();
        let err = ChainKey::open(dir.path(), &MasterKey::from_bytes([1; 32])).unwrap_err();
        assert!(matches!(
            err,
            EventLogError::ChainKeyMalformed { len: 10, .. }
        ));
    }

    #[tokio::test]
    async fn a_log_from_before_the_file_keeps_verifying_with_the_legacy_key() {
        let dir = tempfile::tempdir().unwrap();
        let master = MasterKey::from_bytes([3; 32]);
        let legacy = *master.derive(KeyPurpose::EventLogChain).bytes();
        write_log(dir.path(), legacy).await;
        assert_eq!(ChainKey::open(dir.path(), &master).unwrap().bytes(), legacy);
        let (key, origin) = ChainKey::open_or_create(dir.path(), &master).unwrap();
        assert_eq!((key.bytes(), origin), (legacy, ChainKeyOrigin::Migrated));
        assert!(chain_key_path(dir.path()).is_file());
        assert!(verify_dir(dir.path(), key.bytes()).unwrap().ok);
    }

    #[tokio::test]
    async fn a_log_whose_key_file_went_missing_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let master = MasterKey::from_bytes([4; 32]);
        let (key, _) = ChainKey::open_or_create(dir.path(), &master).unwrap();
        write_log(dir.path(), key.bytes()).await;
        std::fs::remove_file(chain_key_path(dir.path())).unwrap();
        let err = ChainKey::open_or_create(dir.path(), &master).unwrap_err();
        assert!(
            matches!(err, EventLogError::ChainKeyMissing { .. }),
            "{err}"
        );
        assert!(!chain_key_path(dir.path()).exists());
    }

    #[test]
    fn a_copy_sealed_for_a_node_opens_only_for_that_node_and_master_key() {
        let dir = tempfile::tempdir().unwrap();
        let master = MasterKey::from_bytes([9; 32]);
        let (key, _) = ChainKey::open_or_create(dir.path(), &master).unwrap();
        let sealed = key.seal_for_node(&master, "node-a").unwrap();
        let place = Path::new("TG_ANCHORS/chain-key.node-a");
        let opened = ChainKey::unseal_for_node(place, &master, "node-a", &sealed).unwrap();
        assert!(opened.same_as(&key));
        for (master, node) in [
            (&master, "node-b"),
            (&MasterKey::from_bytes([8; 32]), "node-a"),
        ] {
            let err = ChainKey::unseal_for_node(place, master, node, &sealed).unwrap_err();
            assert!(
                matches!(err, EventLogError::ChainKeyWrongMaster { .. }),
                "{err}"
            );
        }
        // Not the file's sealing either: a file copied into JetStream (or back) does not open.
        let file = std::fs::read(chain_key_path(dir.path())).unwrap();
        assert!(ChainKey::unseal_for_node(place, &master, "node-a", &file).is_err());
    }

    #[test]
    fn rotation_reseals_the_same_key_and_can_be_repeated() {
        let dir = tempfile::tempdir().unwrap();
        let (old, new) = (
            MasterKey::from_bytes([5; 32]),
            MasterKey::from_bytes([6; 32]),
        );
        let (key, _) = ChainKey::open_or_create(dir.path(), &old).unwrap();
        let (found, under) = ChainKey::open_for_rotation(dir.path(), &old, &new).unwrap();
        assert_eq!((found.bytes(), under), (key.bytes(), SealedUnder::Old));
        found.seal_to(dir.path(), &new).unwrap();
        assert_eq!(
            ChainKey::open(dir.path(), &new).unwrap().bytes(),
            key.bytes()
        );
        assert!(ChainKey::open(dir.path(), &old).is_err());
        let (again, under) = ChainKey::open_for_rotation(dir.path(), &old, &new).unwrap();
        assert_eq!((again.bytes(), under), (key.bytes(), SealedUnder::New));
        let other = MasterKey::from_bytes([7; 32]);
        let err = ChainKey::open_for_rotation(dir.path(), &other, &MasterKey::from_bytes([8; 32]))
            .unwrap_err();
        assert!(
            matches!(err, EventLogError::ChainKeyNeither { .. }),
            "{err}"
        );
        let mode = std::fs::metadata(chain_key_path(dir.path()))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
    }
}
