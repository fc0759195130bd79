//! Who may call the admin API: named principals, each with a bearer token and per-group grants of
//! privileges, in the style of Telescope's privileges.
//!
//! Principals come from the config (`[[admin.principals]]`), not from a runtime store: the set is
//! small, changes with a deploy, and a config file under review is easier to audit than a bucket.
//! Each names its token by a file (`token_file`, read at start) or by its keyed hash
//! (`token_hash`, from `tgingest admin hash-token`); the node keeps only the keyed hashes. Without
//! principals the node has one, `admin`, holding every privilege on every group, whose token is
//! `admin.token_file` (or `$TGINGEST_ADMIN_TOKEN_FILE`, or the systemd credential
//! `tgingest-admin-token`) or else a token the node generates into `<data_dir>/admin.token`
//! (mode 0600), where `tgingest accounts …` finds it.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::credentials::{SecretFile, SecretFileError};
use crate::keys::DerivedKey;

/// The group of an account without a label, and of grants that name it.
pub const DEFAULT_GROUP: &str = "default";
/// A grant's group that stands for every group (and the scope of node-wide actions: the cluster
/// view, `/metrics`, a replay of every account).
pub const ALL_GROUPS: &str = "*";
/// The name of the principal of the single-token mode.
pub const DEFAULT_PRINCIPAL: &str = "admin";
/// The token file the node generates in its data dir when no principal and no token is set.
pub const GENERATED_TOKEN_FILE: &str = "admin.token";

/// What a principal may do to the accounts of a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Privilege {
    /// See an account and its state (and, on `*`, the cluster view and `/metrics`).
    View,
    /// Run the code/2FA login flow, or import a session string, into the group.
    Login,
    /// Pause, resume, record consent.
    Manage,
    /// Remove an account and its sealed session.
    Remove,
    /// Re-deliver the group's events from `TG_CLEAN` (on `*`: every account's).
    Replay,
    /// Every privilege, plus moving accounts between groups and listing principals.
    Admin,
}

impl Privilege {
    /// Every privilege, in the order the docs list them.
    pub const ALL: [Privilege; 6] = [
        Privilege::View,
        Privilege::Login,
        Privilege::Manage,
        Privilege::Remove,
        Privilege::Replay,
        Privilege::Admin,
    ];

    /// The name used in config files and 403 bodies.
    pub fn name(self) -> &'static str {
        match self {
            Privilege::View => "view",
            Privilege::Login => "login",
            Privilege::Manage => "manage",
            Privilege::Remove => "remove",
            Privilege::Replay => "replay",
            Privilege::Admin => "admin",
        }
    }
}

impl fmt::Display for Privilege {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Privileges on one group of accounts (`*`: every group).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    pub group: String,
    pub privileges: Vec<Privilege>,
}

/// One `[[admin.principals]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrincipalConfig {
    /// Named in every audit record of its requests.
    pub name: String,
    /// A file holding the token (mode 0600); read at start, only its keyed hash kept.
    #[serde(default, skip_serializing_if = "is_empty_path")]
    pub token_file: PathBuf,
    /// The token's keyed hash, as `tgingest admin hash-token` prints it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub token_hash: String,
    pub grants: Vec<Grant>,
}

fn is_empty_path(p: &Path) -> bool {
    p.as_os_str().is_empty()
}

/// Whether `group` is a valid account group label: 1 to 64 letters, digits, `-` or `_`.
pub fn valid_group(group: &str) -> bool {
    !group.is_empty()
        && group.len() <= 64
        && group
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// Why the principals could not be set up; each names the principal or file and what to do.
#[derive(Debug, thiserror::Error)]
pub enum PrincipalError {
    #[error(transparent)]
    TokenFile(#[from] SecretFileError),
    #[error("{file} is empty; put a long random token in it (e.g. `openssl rand -hex 32`)")]
    TokenEmpty { file: SecretFile },
    #[error("cannot create the admin token file {path}: {source}")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "admin.principals {name}: token_hash is not one `tgingest admin hash-token` prints \
         (<key id>:<64 hex>)"
    )]
    BadHash { name: String },
    #[error(
        "admin.principals {name}: token_hash was made under another master key (key id {found}, \
         this node's is {ours}); after `tgingest keys rotate`, run `tgingest admin hash-token` \
         again with the new key"
    )]
    OtherKey {
        name: String,
        found: String,
        ours: String,
    },
    #[error(
        "admin.principals {first} and {second} have the same token; give every principal its own"
    )]
    SharedToken { first: String, second: String },
    #[error(
        "admin.token_file (or $TGINGEST_ADMIN_TOKEN_FILE, or the credential tgingest-admin-token) \
         makes a principal named {DEFAULT_PRINCIPAL}, and admin.principals has one too: rename \
         it, or leave the token file unset"
    )]
    DefaultNameTaken,
}

/// A principal as the node holds it: its name, its token's keyed hash, its grants.
#[derive(Debug, Clone)]
pub struct Principal {
    pub name: String,
    token_hash: blake3::Hash,
    pub grants: Vec<Grant>,
}

impl Principal {
    /// Whether it holds `privilege` on `group` (`admin` implies every privilege; a `*` grant
    /// covers every group, and only a `*` grant covers the node-wide scope `*`).
    pub fn may(&self, privilege: Privilege, group: &str) -> bool {
        self.grants.iter().any(|g| {
            (g.group == ALL_GROUPS || g.group == group)
                && g.privileges
                    .iter()
                    .any(|p| *p == privilege || *p == Privilege::Admin)
        })
    }

    /// Whether it holds `privilege` on some group (to tell "not found" from "not allowed" for an
    /// account that does not exist).
    pub fn may_somewhere(&self, privilege: Privilege) -> bool {
        self.grants.iter().any(|g| {
            g.privileges
                .iter()
                .any(|p| *p == privilege || *p == Privilege::Admin)
        })
    }
}

/// The key that token hashes are made under, and its public id (so a hash made under another
/// master key is told apart from a wrong one).
#[derive(Clone)]
pub struct TokenKey {
    key: DerivedKey,
}

impl TokenKey {
    /// The token key derived from the master key's `AdminToken` sub-key.
    pub fn new(key: DerivedKey) -> Self {
        TokenKey { key }
    }

    /// The keyed hash of a token.
    fn hash(&self, token: &str) -> blake3::Hash {
        blake3::keyed_hash(self.key.bytes(), token.as_bytes())
    }

    /// 8 hex characters naming the key (a hash of a further derived key: says nothing about it).
    pub fn id(&self) -> String {
        hex::encode(
            &self
                .key
                .derive("tgingest 2026-12 admin token key id v1")
                .bytes()[..4],
        )
    }

    /// What `token_hash` holds for `token`: `<key id>:<64 hex>`.
    pub fn token_hash(&self, token: &str) -> String {
        format!("{}:{}", self.id(), self.hash(token).to_hex())
    }

    fn parse_hash(&self, name: &str, text: &str) -> Result<blake3::Hash, PrincipalError> {
        let bad = || PrincipalError::BadHash {
            name: name.to_string(),
        };
        let (id, hash) = text.trim().split_once(':').ok_or_else(bad)?;
        let hash = blake3::Hash::from_hex(hash).map_err(|_| bad())?;
        if id.len() != 8 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        if !id.eq_ignore_ascii_case(&self.id()) {
            return Err(PrincipalError::OtherKey {
                name: name.to_string(),
                found: id.to_string(),
                ours: self.id(),
            });
        }
        Ok(hash)
    }
}

/// Reads a bearer token from `file`: its first line, white space trimmed (the file is refused
/// when group or others can read it).
pub fn read_token(file: &SecretFile) -> Result<zeroize::Zeroizing<String>, PrincipalError> {
    let text = file.read()?;
    let token = zeroize::Zeroizing::new(text.lines().next().unwrap_or("").trim().to_string());
    if token.is_empty() {
        return Err(PrincipalError::TokenEmpty { file: file.clone() });
    }
    Ok(token)
}

/// The principals of one node.
#[derive(Clone)]
pub struct Principals {
    key: TokenKey,
    all: Arc<Vec<Arc<Principal>>>,
}

impl fmt::Debug for Principals {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.all.iter().map(|p| p.name.as_str()).collect();
        f.debug_struct("Principals").field("names", &names).finish()
    }
}

/// Where the principals' tokens come from at start.
pub struct PrincipalSources<'a> {
    /// `[[admin.principals]]`.
    pub configured: &'a [PrincipalConfig],
    /// The single-token mode's file (`admin.token_file`, its env override, or the credential).
    pub token_file: Option<SecretFile>,
    /// Where the token is generated when neither is set (`<data_dir>/admin.token`).
    pub generate_at: &'a Path,
}

/// Where the single-token mode's token came from (for the start-up log; never the token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenOrigin {
    /// Principals from the config; no default principal.
    Configured,
    /// The token file (or credential) of the single-token mode, plus any configured principals.
    File(SecretFile),
    /// Generated into the data dir on this start.
    Generated(PathBuf),
    /// Generated into the data dir on an earlier start.
    DataDir(PathBuf),
}

impl Principals {
    /// Builds the principals from the config and the token files, generating the data dir's token
    /// when the config names none (see the module doc).
    pub fn load(
        sources: PrincipalSources<'_>,
        key: TokenKey,
    ) -> Result<(Principals, TokenOrigin), PrincipalError> {
        let mut all = Vec::new();
        for p in sources.configured {
            let token_hash = if p.token_hash.is_empty() {
                let file = SecretFile::Plain {
                    label: "admin.principals token_file",
                    path: p.token_file.clone(),
                };
                key.hash(&read_token(&file)?)
            } else {
                key.parse_hash(&p.name, &p.token_hash)?
            };
            all.push(Principal {
                name: p.name.clone(),
                token_hash,
                grants: p.grants.clone(),
            });
        }
        let everything = vec![Grant {
            group: ALL_GROUPS.into(),
            privileges: vec![Privilege::Admin],
        }];
        let default_file = match (&sources.token_file, sources.configured.is_empty()) {
            (Some(file), _) => Some((file.clone(), TokenOrigin::File(file.clone()))),
            (None, true) => {
                let path = sources.generate_at.to_path_buf();
                let origin = if path.exists() {
                    TokenOrigin::DataDir(path.clone())
                } else {
                    let token = zeroize::Zeroizing::new(hex::encode(rand::random::<[u8; 32]>()));
                    crate::credentials::write_new_secret(&path, &token).map_err(|source| {
                        PrincipalError::Create {
                            path: path.clone(),
                            source,
                        }
                    })?;
                    TokenOrigin::Generated(path.clone())
                };
                let file = SecretFile::Plain {
                    label: "admin token file",
                    path,
                };
                Some((file, origin))
            }
            (None, false) => None,
        };
        let origin = match default_file {
            Some((file, origin)) => {
                if all.iter().any(|p| p.name == DEFAULT_PRINCIPAL) {
                    return Err(PrincipalError::DefaultNameTaken);
                }
                all.push(Principal {
                    name: DEFAULT_PRINCIPAL.into(),
                    token_hash: key.hash(&read_token(&file)?),
                    grants: everything,
                });
                origin
            }
            None => TokenOrigin::Configured,
        };
        for (i, a) in all.iter().enumerate() {
            if let Some(b) = all[i + 1..].iter().find(|b| b.token_hash == a.token_hash) {
                return Err(PrincipalError::SharedToken {
                    first: a.name.clone(),
                    second: b.name.clone(),
                });
            }
        }
        Ok((
            Principals {
                key,
                all: Arc::new(all.into_iter().map(Arc::new).collect()),
            },
            origin,
        ))
    }

    /// The principal whose token this is. Every principal's hash is compared (in constant time:
    /// `blake3::Hash`'s equality), so the time taken does not say which one nearly matched.
    pub fn authenticate(&self, token: &str) -> Option<Arc<Principal>> {
        let given = self.key.hash(token);
        let mut found = None;
        for p in self.all.iter() {
            if p.token_hash == given {
                found = Some(p.clone());
            }
        }
        found
    }

    /// Every principal (names and grants; the hashes stay inside).
    pub fn list(&self) -> impl Iterator<Item = &Principal> {
        self.all.iter().map(|p| p.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::keys::{KeyPurpose, MasterKey};

    fn key(byte: u8) -> TokenKey {
        TokenKey::new(MasterKey::from_bytes([byte; 32]).derive(KeyPurpose::AdminToken))
    }

    fn grant(group: &str, privileges: &[Privilege]) -> Grant {
        Grant {
            group: group.into(),
            privileges: privileges.to_vec(),
        }
    }

    #[test]
    fn admin_implies_every_privilege_and_star_covers_every_group_but_a_group_not_star() {
        let p = Principal {
            name: "p".into(),
            token_hash: blake3::hash(b"x"),
            grants: vec![
                grant("ops", &[Privilege::Admin]),
                grant("*", &[Privilege::View]),
            ],
        };
        for privilege in Privilege::ALL {
            assert!(p.may(privilege, "ops"), "{privilege}");
        }
        assert!(p.may(Privilege::View, "sales") && p.may(Privilege::View, ALL_GROUPS));
        assert!(!p.may(Privilege::Manage, "sales"));
        assert!(
            !p.may(Privilege::Manage, ALL_GROUPS),
            "a group grant is not node-wide"
        );
        assert!(p.may_somewhere(Privilege::Remove));
    }

    #[test]
    fn a_token_hash_authenticates_only_under_the_key_it_was_made_with() {
        let dir = tempfile::tempdir().unwrap();
        let configured = vec![PrincipalConfig {
            name: "ops".into(),
            token_file: PathBuf::new(),
            token_hash: key(1).token_hash("ops-token"),
            grants: vec![grant("ops", &[Privilege::View])],
        }];
        let generated = dir.path().join("admin.token");
        let sources = || PrincipalSources {
            configured: &configured,
            token_file: None,
            generate_at: &generated,
        };
        let (principals, origin) = Principals::load(sources(), key(1)).unwrap();
        assert_eq!(origin, TokenOrigin::Configured);
        assert_eq!(principals.authenticate("ops-token").unwrap().name, "ops");
        assert!(principals.authenticate("ops-token ").is_none());
        assert!(
            !dir.path().join("admin.token").exists(),
            "no default principal when principals are configured"
        );
        let err = Principals::load(sources(), key(2)).unwrap_err().to_string();
        assert!(err.contains("another master key"), "{err}");
    }

    #[test]
    fn without_principals_a_private_token_is_generated_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data/admin.token");
        let sources = || PrincipalSources {
            configured: &[],
            token_file: None,
            generate_at: &path,
        };
        let (principals, origin) = Principals::load(sources(), key(1)).unwrap();
        assert_eq!(origin, TokenOrigin::Generated(path.clone()));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let token = std::fs::read_to_string(&path).unwrap();
        let admin = principals.authenticate(token.trim()).unwrap();
        assert_eq!(admin.name, DEFAULT_PRINCIPAL);
        assert!(admin.may(Privilege::Admin, ALL_GROUPS));
        let (again, origin) = Principals::load(sources(), key(1)).unwrap();
        assert_eq!(origin, TokenOrigin::DataDir(path.clone()));
        assert!(again.authenticate(token.trim()).is_some());
    }

    #[test]
    fn two_principals_with_one_token_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let configured: Vec<PrincipalConfig> = ["a", "b"]
            .iter()
            .map(|name| PrincipalConfig {
                name: (*name).into(),
                token_file: PathBuf::new(),
                token_hash: key(1).token_hash("same"),
                grants: vec![],
            })
            .collect();
        let err = Principals::load(
            PrincipalSources {
                configured: &configured,
                token_file: None,
                generate_at: &dir.path().join("t"),
            },
            key(1),
        )
        .unwrap_err();
        assert!(matches!(err, PrincipalError::SharedToken { .. }), "{err}");
    }
}
