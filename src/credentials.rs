//! Files that hold a secret: the ones an operator manages (readable by their owner only) and
//! systemd credentials (`LoadCredential=`, found in `$CREDENTIALS_DIRECTORY`).
//!
//! systemd writes a credential 0400 and, when the unit runs as another user than the manager,
//! grants that user read access with an ACL entry; `stat` then shows the ACL mask as group read
//! (0440). So a credential is refused only when "others" may read it, a plain file when group or
//! others may.

use std::fmt;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

/// Environment variable systemd sets to the directory holding the unit's credentials.
pub const CREDENTIALS_DIRECTORY_ENV: &str = "CREDENTIALS_DIRECTORY";
/// Name of the systemd credential holding the master key (`LoadCredential=tgingest-master-key:…`).
pub const MASTER_KEY_CREDENTIAL: &str = "tgingest-master-key";
/// Name of the systemd credential holding the admin API's bearer token.
pub const ADMIN_TOKEN_CREDENTIAL: &str = "tgingest-admin-token";

/// A file holding a secret, named the way errors and logs name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretFile {
    /// A file an operator manages; `label` says which setting named it ("master key file").
    Plain { label: &'static str, path: PathBuf },
    /// A systemd credential.
    Credential { name: &'static str, path: PathBuf },
}

impl fmt::Display for SecretFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretFile::Plain { label, path } => write!(f, "{label} {}", path.display()),
            SecretFile::Credential { name, path } => {
                write!(f, "systemd credential {name} ({})", path.display())
            }
        }
    }
}

impl SecretFile {
    /// The credential `name`, when `$CREDENTIALS_DIRECTORY` is set and holds it (systemd leaves a
    /// credential out when its source file is missing, so absence is not an error).
    pub fn credential(name: &'static str) -> Option<SecretFile> {
        let dir = std::env::var_os(CREDENTIALS_DIRECTORY_ENV).filter(|d| !d.is_empty())?;
        let path = Path::new(&dir).join(name);
        match std::fs::symlink_metadata(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            // Anything else (even a stat error) names the file, so reading it reports the problem.
            _ => Some(SecretFile::Credential { name, path }),
        }
    }

    /// Where the file is.
    pub fn path(&self) -> &Path {
        match self {
            SecretFile::Plain { path, .. } | SecretFile::Credential { path, .. } => path,
        }
    }

    /// The permission bits that make the file too open.
    fn forbidden_bits(&self) -> u32 {
        match self {
            SecretFile::Plain { .. } => 0o077,
            SecretFile::Credential { .. } => 0o007,
        }
    }

    /// The file's text (wiped when dropped), after checking that it is not too open.
    pub fn read(&self) -> Result<Zeroizing<String>, SecretFileError> {
        let read_err = |source| SecretFileError::Read {
            file: self.clone(),
            source,
        };
        let mode = std::fs::metadata(self.path())
            .map_err(read_err)?
            .permissions()
            .mode();
        if mode & self.forbidden_bits() != 0 {
            return Err(SecretFileError::TooOpen {
                file: self.clone(),
                mode: mode & 0o777,
            });
        }
        std::fs::read_to_string(self.path())
            .map(Zeroizing::new)
            .map_err(read_err)
    }
}

/// Writes `text` and a newline to a new file at `path`, readable by its owner only (mode 0600),
/// never overwriting one (`create_new`), synced to disk; creates the parent directories. The way
/// every secret tgingest generates (the embedded default's master key, its admin token) is written.
pub fn write_new_secret(path: &Path, text: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    writeln!(file, "{text}")?;
    file.sync_all()
}

/// Why a secret file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SecretFileError {
    #[error("cannot read {file}: {source}")]
    Read {
        file: SecretFile,
        source: std::io::Error,
    },
    #[error("{file} is readable by others (mode {mode:o}); {}", too_open_fix(.file))]
    TooOpen { file: SecretFile, mode: u32 },
}

fn too_open_fix(file: &SecretFile) -> String {
    match file {
        SecretFile::Plain { path, .. } => format!("run `chmod 600 {}`", path.display()),
        SecretFile::Credential { .. } => {
            "systemd makes credentials 0400; check who set $CREDENTIALS_DIRECTORY".into()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str, mode: u32) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    #[test]
    fn a_credential_may_show_group_read_but_a_plain_file_may_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "k", "secret\n", 0o440);
        let credential = SecretFile::Credential {
            name: MASTER_KEY_CREDENTIAL,
            path: path.clone(),
        };
        assert_eq!(credential.read().unwrap().as_str(), "secret\n");
        let plain = SecretFile::Plain {
            label: "master key file",
            path: path.clone(),
        };
        let err = plain.read().unwrap_err().to_string();
        assert!(
            err.contains("mode 440") && err.contains("chmod 600"),
            "{err}"
        );
        write(dir.path(), "k", "secret\n", 0o444);
        let err = credential.read().unwrap_err().to_string();
        assert!(
            err.starts_with("systemd credential tgingest-master-key (") && err.contains("mode 444"),
            "{err}"
        );
    }

    #[test]
    fn an_unreadable_file_is_named_in_the_error() {
        let file = SecretFile::Credential {
            name: ADMIN_TOKEN_CREDENTIAL,
            path: PathBuf::from("/nonexistent/tgingest-admin-token"),
        };
        let err = file.read().unwrap_err().to_string();
        assert!(
            err.starts_with(
                "cannot read systemd credential tgingest-admin-token (/nonexistent/tgingest-admin-token)"
            ),
            "{err}"
        );
    }
}
