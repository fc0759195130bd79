//! The master key, and the sub-keys derived from it for each purpose.
//!
//! The master key never enters NATS or a log line. It comes from `TGINGEST_MASTER_KEY` (64 hex
//! characters) or from a key file (`security.master_key_file`, or `TGINGEST_MASTER_KEY_FILE`) that
//! only its owner may read. The embedded default generates a key file in the data dir on first run;
//! production must supply its own.

use std::fmt;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Environment variable holding the master key itself, as 64 hex characters.
pub const MASTER_KEY_ENV: &str = "TGINGEST_MASTER_KEY";
/// Environment variable naming the master key file (overrides `security.master_key_file`).
pub const MASTER_KEY_FILE_ENV: &str = "TGINGEST_MASTER_KEY_FILE";
/// Name of the key file the embedded default generates inside the data dir.
pub const GENERATED_KEY_FILE: &str = "master.key";

/// What a derived key is for; each purpose gets an unrelated key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyPurpose {
    /// Keyed the hash chain of event logs made before the chain key got its own random key (see
    /// [`crate::eventlog::ChainKey`]); still read to migrate such logs.
    EventLogChain,
    /// Seals the event log's random chain key at rest (`eventlog/chain.key`).
    ChainKeySeal,
    /// Keys the hashes that stand for people's ids in log lines.
    LogIdHash,
    /// Seals Telegram sessions at rest (per account: see [`MasterKey::derive_for`]).
    SessionSeal,
    /// Encrypts the embedded nats-server's JetStream store (see [`crate::nats_server::encryption`]).
    NatsStore,
}

impl KeyPurpose {
    fn context(self) -> &'static str {
        match self {
            KeyPurpose::EventLogChain => "tgingest 2026-11 eventlog chain v1",
            KeyPurpose::ChainKeySeal => "tgingest 2026-11 eventlog chain key seal v1",
            KeyPurpose::LogIdHash => "tgingest 2026-11 log id hash v1",
            KeyPurpose::SessionSeal => "tgingest 2026-11 session seal v1",
            KeyPurpose::NatsStore => "tgingest 2026-12 nats jetstream store v1",
        }
    }
}

/// Where the master key in use came from (for the start-up log; never the key itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyOrigin {
    Env,
    File(PathBuf),
    Generated(PathBuf),
}

/// Why no usable master key could be had.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{origin}: the master key must be 64 hex characters (32 bytes); {problem}")]
    BadFormat { origin: String, problem: String },
    #[error("cannot read master key file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "master key file {path} is readable by others (mode {mode:o}); run `chmod 600 {path}`",
        path = path.display()
    )]
    TooOpen { path: PathBuf, mode: u32 },
    #[error("cannot create master key file {path}: {source}")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "no master key: set {MASTER_KEY_ENV} (64 hex characters) or security.master_key_file \
         (or {MASTER_KEY_FILE_ENV}); only the embedded default generates one by itself"
    )]
    Missing,
}

/// 32 secret bytes; `Debug` never shows them, and they are wiped on drop.
#[derive(Clone)]
pub struct MasterKey([u8; 32]);

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(***)")
    }
}

impl Drop for MasterKey {
    fn drop(&mut self) {
        // Best effort: volatile writes so the wipe is not optimised away.
        for b in self.0.iter_mut() {
            unsafe { std::ptr::write_volatile(b, 0) };
        }
    }
}

impl MasterKey {
    /// Wraps raw key bytes (tests, and keys generated here).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        MasterKey(bytes)
    }

    /// A fresh random key.
    pub fn generate() -> Self {
        MasterKey(rand::random())
    }

    /// Parses 64 hex characters (surrounding white space ignored); `origin` names the source in errors.
    pub fn from_hex(text: &str, origin: &str) -> Result<Self, KeyError> {
        let text = text.trim();
        let bad = |problem: String| KeyError::BadFormat {
            origin: origin.to_string(),
            problem,
        };
        if text.len() != 64 {
            return Err(bad(format!("found {} characters", text.len())));
        }
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(text, &mut bytes)
            .map_err(|_| bad("found a character that is not hex".into()))?;
        Ok(MasterKey(bytes))
    }

    /// Reads a key file, refusing one that group or others can read.
    pub fn read_file(path: &Path) -> Result<Self, KeyError> {
        let read_err = |source| KeyError::Read {
            path: path.to_path_buf(),
            source,
        };
        let mode = std::fs::metadata(path)
            .map_err(read_err)?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(KeyError::TooOpen {
                path: path.to_path_buf(),
                mode: mode & 0o777,
            });
        }
        let text = std::fs::read_to_string(path).map_err(read_err)?;
        Self::from_hex(&text, &format!("master key file {}", path.display()))
    }

    /// Writes a new random key to `path` (mode 0600, never overwriting) and returns it.
    pub fn generate_file(path: &Path) -> Result<Self, KeyError> {
        let create_err = |source| KeyError::Create {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(create_err)?;
        }
        let key = Self::generate();
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(create_err)?;
        writeln!(file, "{}", hex::encode(key.0)).map_err(create_err)?;
        file.sync_all().map_err(create_err)?;
        Ok(key)
    }

    /// Resolves the key: the env value wins, then the configured file; with neither, the
    /// embedded default uses (or first creates) `generate_at`, and anything else is an error.
    pub fn resolve(
        env_value: Option<&str>,
        file: Option<&Path>,
        generate_at: Option<&Path>,
    ) -> Result<(Self, KeyOrigin), KeyError> {
        if let Some(text) = env_value {
            return Ok((Self::from_hex(text, MASTER_KEY_ENV)?, KeyOrigin::Env));
        }
        if let Some(path) = file {
            return Ok((Self::read_file(path)?, KeyOrigin::File(path.to_path_buf())));
        }
        let Some(path) = generate_at else {
            return Err(KeyError::Missing);
        };
        if path.exists() {
            return Ok((Self::read_file(path)?, KeyOrigin::File(path.to_path_buf())));
        }
        Ok((
            Self::generate_file(path)?,
            KeyOrigin::Generated(path.to_path_buf()),
        ))
    }

    /// Whether both are the same key (compared in constant time).
    pub fn same_as(&self, other: &MasterKey) -> bool {
        same_secret(&self.0, &other.0)
    }

    /// The key for one purpose.
    pub fn derive(&self, purpose: KeyPurpose) -> [u8; 32] {
        blake3::derive_key(purpose.context(), &self.0)
    }

    /// The key for one purpose and one subject (for example, one account's session seal).
    pub fn derive_for(&self, purpose: KeyPurpose, subject: &str) -> [u8; 32] {
        blake3::keyed_hash(&self.derive(purpose), subject.as_bytes()).into()
    }
}

/// Whether two 32-byte secrets are equal, in constant time (no early exit to time).
pub(crate) fn same_secret(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter()
        .zip(b.iter())
        .fold(0u8, |diff, (x, y)| diff | (x ^ y))
        == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purposes_and_subjects_get_unrelated_keys() {
        let key = MasterKey::from_bytes([7; 32]);
        let chain = key.derive(KeyPurpose::EventLogChain);
        assert_ne!(chain, key.derive(KeyPurpose::LogIdHash));
        assert_ne!(chain, key.derive(KeyPurpose::ChainKeySeal));
        assert_ne!(
            key.derive_for(KeyPurpose::SessionSeal, "a"),
            key.derive_for(KeyPurpose::SessionSeal, "b")
        );
        assert_eq!(
            chain,
            MasterKey::from_bytes([7; 32]).derive(KeyPurpose::EventLogChain)
        );
    }

    #[test]
    fn generated_file_is_private_and_reloads_to_the_same_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/master.key");
        let (first, origin) = MasterKey::resolve(None, None, Some(&path)).unwrap();
        assert_eq!(origin, KeyOrigin::Generated(path.clone()));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let (again, origin) = MasterKey::resolve(None, None, Some(&path)).unwrap();
        assert_eq!(origin, KeyOrigin::File(path));
        assert_eq!(first.0, again.0);
    }

    #[test]
    fn bad_keys_are_refused_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        std::fs::write(&path, "ab".repeat(32)).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            MasterKey::read_file(&path),
            Err(KeyError::TooOpen { mode: 0o644, .. })
        ));
        let err = MasterKey::from_hex("zz", "test").unwrap_err().to_string();
        assert!(err.contains("found 2 characters"), "{err}");
        let err = MasterKey::from_hex(&"g".repeat(64), "test")
            .unwrap_err()
            .to_string();
        assert!(err.contains("not hex"), "{err}");
        assert!(matches!(
            MasterKey::resolve(None, None, None),
            Err(KeyError::Missing)
        ));
    }

    #[test]
    fn same_as_compares_the_keys() {
        let a = MasterKey::from_bytes([1; 32]);
        assert!(a.same_as(&MasterKey::from_bytes([1; 32])));
        let mut other = [1; 32];
        other[31] = 2;
        assert!(!a.same_as(&MasterKey::from_bytes(other)));
    }

    #[test]
    fn debug_never_shows_the_key() {
        assert_eq!(
            format!("{:?}", MasterKey::from_bytes([0xab; 32])),
            "MasterKey(***)"
        );
    }
}
