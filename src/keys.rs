//! The master key, and the sub-keys derived from it for each purpose.
//!
//! The master key never enters NATS or a log line. It comes, the first source set winning, from
//! `TGINGEST_MASTER_KEY` (64 hex characters), the file `TGINGEST_MASTER_KEY_FILE` names, the
//! systemd credential `tgingest-master-key` (`LoadCredential=`), or the file
//! `security.master_key_file` names; key files must be readable by their owner only. The embedded
//! default generates a key file in the data dir on first run; production must supply its own.
//! The master key and the keys derived from it are wiped (zeroized) when dropped.

use std::fmt;
use std::path::{Path, PathBuf};

use zeroize::Zeroize;

use crate::credentials::{SecretFile, SecretFileError};

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
    /// Keys the hashes of the admin API's bearer tokens (see [`crate::admin::principals`]).
    AdminToken,
}

impl KeyPurpose {
    fn context(self) -> &'static str {
        match self {
            KeyPurpose::EventLogChain => "tgingest 2026-11 eventlog chain v1",
            KeyPurpose::ChainKeySeal => "tgingest 2026-11 eventlog chain key seal v1",
            KeyPurpose::LogIdHash => "tgingest 2026-11 log id hash v1",
            KeyPurpose::SessionSeal => "tgingest 2026-11 session seal v1",
            KeyPurpose::NatsStore => "tgingest 2026-12 nats jetstream store v1",
            KeyPurpose::AdminToken => "tgingest 2026-12 admin token hash v1",
        }
    }
}

/// Where the master key in use came from (for the start-up log; never the key itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyOrigin {
    /// `TGINGEST_MASTER_KEY`.
    Env,
    /// A key file (`TGINGEST_MASTER_KEY_FILE` or `security.master_key_file`).
    File(PathBuf),
    /// The systemd credential `tgingest-master-key`, at this path.
    Credential(PathBuf),
    /// The embedded default's key, generated into the data dir on this start.
    Generated(PathBuf),
}

/// Every place the master key may come from, in precedence order (the first one set wins).
#[derive(Debug, Clone, Copy, Default)]
pub struct KeySources<'a> {
    /// The value of `TGINGEST_MASTER_KEY`.
    pub env_value: Option<&'a str>,
    /// The file `TGINGEST_MASTER_KEY_FILE` names.
    pub env_file: Option<&'a Path>,
    /// The systemd credential `tgingest-master-key`, if `$CREDENTIALS_DIRECTORY` holds it.
    pub credential: Option<&'a Path>,
    /// The file `security.master_key_file` names.
    pub config_file: Option<&'a Path>,
    /// The embedded default's key file: used, or first generated, when nothing above is set.
    pub generate_at: Option<&'a Path>,
}

/// Why no usable master key could be had.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{origin}: the master key must be 64 hex characters (32 bytes); {problem}")]
    BadFormat { origin: String, problem: String },
    #[error(transparent)]
    File(#[from] SecretFileError),
    #[error("cannot create master key file {path}: {source}")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "no master key: set {MASTER_KEY_ENV} (64 hex characters) or security.master_key_file \
         (or {MASTER_KEY_FILE_ENV}), or pass the systemd credential tgingest-master-key; only the \
         embedded default generates one by itself"
    )]
    Missing,
}

/// 32 secret bytes; `Debug` never shows them, and they are wiped on drop.
#[derive(Clone)]
pub struct MasterKey([u8; 32]);

impl Drop for MasterKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(***)")
    }
}

/// A key derived from the master key for one purpose; `Debug` never shows it, and it is wiped
/// on drop. Copies taken with [`DerivedKey::bytes`] are the caller's to wipe.
#[derive(Clone)]
pub struct DerivedKey([u8; 32]);

impl Drop for DerivedKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Debug for DerivedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DerivedKey(***)")
    }
}

impl PartialEq for DerivedKey {
    fn eq(&self, other: &Self) -> bool {
        same_secret(&self.0, &other.0)
    }
}

impl Eq for DerivedKey {}

impl DerivedKey {
    /// The key bytes, borrowed.
    pub fn bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// A further key derived from this one for `context` (a blake3 `derive_key` context string).
    pub fn derive(&self, context: &str) -> DerivedKey {
        DerivedKey(blake3::derive_key(context, &self.0))
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
        Self::read_secret(&SecretFile::Plain {
            label: "master key file",
            path: path.to_path_buf(),
        })
    }

    /// Reads a key file or a systemd credential; errors name it.
    fn read_secret(file: &SecretFile) -> Result<Self, KeyError> {
        let text = file.read()?;
        Self::from_hex(&text, &file.to_string())
    }

    /// Writes a new random key to `path` (mode 0600, never overwriting) and returns it.
    pub fn generate_file(path: &Path) -> Result<Self, KeyError> {
        let create_err = |source| KeyError::Create {
            path: path.to_path_buf(),
            source,
        };
        let key = Self::generate();
        crate::credentials::write_new_secret(path, &zeroize::Zeroizing::new(hex::encode(key.0)))
            .map_err(create_err)?;
        Ok(key)
    }

    /// Resolves the key from the first source set, in [`KeySources`]' order: the env value,
    /// the env file, the systemd credential, the configured file; with none, the embedded
    /// default uses (or first creates) `generate_at`, and anything else is an error. A source
    /// that is set but bad is an error naming it, never a reason to try the next one.
    pub fn resolve(sources: KeySources<'_>) -> Result<(Self, KeyOrigin), KeyError> {
        if let Some(text) = sources.env_value {
            return Ok((Self::from_hex(text, MASTER_KEY_ENV)?, KeyOrigin::Env));
        }
        let plain = |label, path: &Path| {
            let file = SecretFile::Plain {
                label,
                path: path.to_path_buf(),
            };
            Ok((
                Self::read_secret(&file)?,
                KeyOrigin::File(file.path().into()),
            ))
        };
        if let Some(path) = sources.env_file {
            return plain("master key file (TGINGEST_MASTER_KEY_FILE)", path);
        }
        if let Some(path) = sources.credential {
            let file = SecretFile::Credential {
                name: crate::credentials::MASTER_KEY_CREDENTIAL,
                path: path.to_path_buf(),
            };
            let key = Self::read_secret(&file)?;
            return Ok((key, KeyOrigin::Credential(path.to_path_buf())));
        }
        if let Some(path) = sources.config_file {
            return plain("master key file (security.master_key_file)", path);
        }
        let Some(path) = sources.generate_at else {
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
    pub fn derive(&self, purpose: KeyPurpose) -> DerivedKey {
        DerivedKey(blake3::derive_key(purpose.context(), &self.0))
    }

    /// The key for one purpose and one subject (for example, one account's session seal).
    pub fn derive_for(&self, purpose: KeyPurpose, subject: &str) -> DerivedKey {
        DerivedKey(blake3::keyed_hash(self.derive(purpose).bytes(), subject.as_bytes()).into())
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
    use std::os::unix::fs::PermissionsExt;

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
        let generate = KeySources {
            generate_at: Some(&path),
            ..KeySources::default()
        };
        let (first, origin) = MasterKey::resolve(generate).unwrap();
        assert_eq!(origin, KeyOrigin::Generated(path.clone()));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let (again, origin) = MasterKey::resolve(generate).unwrap();
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
            Err(KeyError::File(SecretFileError::TooOpen { mode: 0o644, .. }))
        ));
        let err = MasterKey::from_hex("zz", "test").unwrap_err().to_string();
        assert!(err.contains("found 2 characters"), "{err}");
        let err = MasterKey::from_hex(&"g".repeat(64), "test")
            .unwrap_err()
            .to_string();
        assert!(err.contains("not hex"), "{err}");
        assert!(matches!(
            MasterKey::resolve(KeySources::default()),
            Err(KeyError::Missing)
        ));
    }

    /// Writes `key` as hex to `dir/name` with `mode`.
    fn key_file(dir: &Path, name: &str, key: u8, mode: u32) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, hex::encode([key; 32])).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    #[test]
    fn the_first_source_set_wins_env_then_env_file_then_credential_then_config() {
        let dir = tempfile::tempdir().unwrap();
        let env_file = key_file(dir.path(), "env.key", 2, 0o600);
        let credential = key_file(dir.path(), "tgingest-master-key", 3, 0o440);
        let config_file = key_file(dir.path(), "config.key", 4, 0o600);
        let env_value = hex::encode([1u8; 32]);
        let mut sources = KeySources {
            env_value: Some(&env_value),
            env_file: Some(&env_file),
            credential: Some(&credential),
            config_file: Some(&config_file),
            generate_at: None,
        };
        let first = |sources| {
            let (key, origin) = MasterKey::resolve(sources).unwrap();
            (key.0[0], origin)
        };
        assert_eq!(first(sources), (1, KeyOrigin::Env));
        sources.env_value = None;
        assert_eq!(first(sources), (2, KeyOrigin::File(env_file.clone())));
        sources.env_file = None;
        assert_eq!(
            first(sources),
            (3, KeyOrigin::Credential(credential.clone()))
        );
        sources.credential = None;
        assert_eq!(first(sources), (4, KeyOrigin::File(config_file.clone())));
    }

    #[test]
    fn a_malformed_credential_is_refused_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tgingest-master-key");
        std::fs::write(&path, "abc").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).unwrap();
        let config_file = key_file(dir.path(), "config.key", 4, 0o600);
        let sources = KeySources {
            credential: Some(&path),
            config_file: Some(&config_file),
            ..KeySources::default()
        };
        let err = MasterKey::resolve(sources).unwrap_err().to_string();
        let want = format!(
            "systemd credential tgingest-master-key ({}): the master key must be 64 hex characters (32 bytes); found 3 characters",
            path.display()
        );
        assert_eq!(err, want);
    }

    #[test]
    fn derived_keys_never_show_in_debug() {
        let key = MasterKey::from_bytes([0xab; 32]).derive(KeyPurpose::LogIdHash);
        assert_eq!(format!("{key:?}"), "DerivedKey(***)");
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
