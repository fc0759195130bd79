//! The link to an external NATS: who tgingest is to the server (a `.creds` file or an NKey seed),
//! the TLS it insists on, and what a refusal means.
//!
//! A refusal that configuration can fix (credentials the server does not know, a certificate
//! that does not verify, a subject the user may not use) is told apart from a server that is not
//! reachable, so start-up can stop with exit 2 and a message that names the cause and the key to
//! change, instead of looking like an outage.

use std::path::Path;

use async_nats::ConnectOptions;

use super::BusError;
use crate::config::NatsConfig;
use crate::credentials::SecretFile;

/// Applies `nats.credentials_file` or `nats.nkey_file` and `nats.tls` to `opts`.
///
/// Both credential files hold a private seed, so they are read through [`SecretFile`] (refused
/// when group or others may read them), and an NKey seed is parsed here, so a bad file is named
/// before any server is asked.
pub(super) fn secure(
    mut opts: ConnectOptions,
    cfg: &NatsConfig,
) -> Result<ConnectOptions, BusError> {
    if !cfg.credentials_file.as_os_str().is_empty() {
        let text = SecretFile::Plain {
            label: "NATS credentials file (nats.credentials_file)",
            path: cfg.credentials_file.clone(),
        }
        .read()?;
        opts = opts
            .credentials(&text)
            .map_err(|source| BusError::Credentials {
                path: cfg.credentials_file.display().to_string(),
                source,
            })?;
    } else if !cfg.nkey_file.as_os_str().is_empty() {
        let seed = read_nkey_seed(&cfg.nkey_file)?;
        opts = opts.nkey(seed);
    }
    let tls = &cfg.tls;
    if tls.required {
        opts = opts.require_tls(true);
    }
    if !tls.ca_file.as_os_str().is_empty() {
        opts = opts.add_root_certificates(tls.ca_file.clone());
    }
    if !tls.cert_file.as_os_str().is_empty() {
        opts = opts.add_client_certificate(tls.cert_file.clone(), tls.key_file.clone());
    }
    Ok(opts)
}

/// The user seed in `path` (one line, `SU…`), checked to be one.
fn read_nkey_seed(path: &Path) -> Result<String, BusError> {
    let text = SecretFile::Plain {
        label: "NATS NKey seed file (nats.nkey_file)",
        path: path.to_path_buf(),
    }
    .read()?;
    let seed = text.trim();
    let bad = |message: String| BusError::NkeySeed {
        path: path.display().to_string(),
        message,
    };
    let pair = nkeys::KeyPair::from_seed(seed).map_err(|e| bad(e.to_string()))?;
    if !pair.public_key().starts_with('U') {
        return Err(bad(
            "the seed is not a user's (a user seed starts with SU)".into()
        ));
    }
    Ok(seed.to_string())
}

/// Who the connection claimed to be, for the message when the server refuses it.
fn who(cfg: &NatsConfig) -> String {
    if !cfg.credentials_file.as_os_str().is_empty() {
        format!(
            "nats.credentials_file {}: check that the server (its operator and account) knows \
             this user and that the JWT has not expired or been revoked",
            cfg.credentials_file.display()
        )
    } else if !cfg.nkey_file.as_os_str().is_empty() {
        let user = read_nkey_seed(&cfg.nkey_file)
            .ok()
            .and_then(|seed| nkeys::KeyPair::from_seed(&seed).ok())
            .map(|pair| format!(" (user {})", pair.public_key()))
            .unwrap_or_default();
        format!(
            "nats.nkey_file {}{user}: check that the server's authorization lists this public \
             key",
            cfg.nkey_file.display()
        )
    } else {
        "no credentials were given: set nats.credentials_file or nats.nkey_file".into()
    }
}

/// What CA the connection trusted, for the message when a certificate does not verify.
fn trusted(cfg: &NatsConfig) -> String {
    if cfg.tls.ca_file.as_os_str().is_empty() {
        "the system's roots, as nats.tls.ca_file is empty".into()
    } else {
        format!("nats.tls.ca_file {}", cfg.tls.ca_file.display())
    }
}

/// Turns a failed connect into the error that names its cause: refused credentials, a
/// certificate that does not verify, another TLS failure, or (none of those) a server that could
/// not be reached.
pub(super) fn refused(url: &str, cfg: &NatsConfig, e: &async_nats::ConnectError) -> BusError {
    use async_nats::ConnectErrorKind;
    let url = url.to_string();
    match e.kind() {
        ConnectErrorKind::AuthorizationViolation | ConnectErrorKind::Authentication => {
            BusError::NotAuthorized {
                url,
                detail: e.to_string(),
                who: who(cfg),
            }
        }
        kind => match rustls_error(e) {
            Some(rustls::Error::InvalidCertificate(reason)) => BusError::Certificate {
                url,
                reason: reason.to_string(),
                trusted: trusted(cfg),
            },
            Some(other) => BusError::Tls {
                url,
                message: other.to_string(),
            },
            None if kind == ConnectErrorKind::Tls => BusError::Tls {
                url,
                message: super::error_chain(e),
            },
            None => BusError::Connect {
                url,
                message: super::error_chain(e),
            },
        },
    }
}

/// The TLS error under `e`, if a handshake failed. tokio-rustls reports one as an `io::Error`
/// wrapping the `rustls::Error`, and `io::Error::source` skips the wrapped error, so each level
/// is also looked into with `get_ref`.
fn rustls_error<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut level: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(current) = level {
        if let Some(found) = current.downcast_ref::<rustls::Error>() {
            return Some(found);
        }
        if let Some(found) = current
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            return Some(found);
        }
        level = current.source();
    }
    None
}

/// A subject the server would not let this connection use (its `Permissions Violation` error).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// `publish to` or `subscribe to`.
    pub operation: &'static str,
    /// The subject, as the server quoted it.
    pub subject: String,
}

impl Violation {
    /// Reads nats-server's `Permissions Violation for Publish to "x"` (also `… for Subscription
    /// to "x"`, `… for Publish with Reply of "x"`); `None` for any other server error.
    pub fn parse(message: &str) -> Option<Violation> {
        let rest = message.strip_prefix("Permissions Violation for ")?;
        let operation = if rest.starts_with("Subscription") {
            "subscribe to"
        } else if rest.starts_with("Publish with Reply") {
            "reply to"
        } else {
            "publish to"
        };
        let start = rest.find('"')? + 1;
        let end = start + rest[start..].find('"')?;
        Some(Violation {
            operation,
            subject: rest[start..end].to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_servers_permission_errors_name_operation_and_subject() {
        assert_eq!(
            Violation::parse(r#"Permissions Violation for Publish to "tg.raw.0.private""#),
            Some(Violation {
                operation: "publish to",
                subject: "tg.raw.0.private".into()
            })
        );
        assert_eq!(
            Violation::parse(r#"Permissions Violation for Subscription to "_INBOX.abc.*""#),
            Some(Violation {
                operation: "subscribe to",
                subject: "_INBOX.abc.*".into()
            })
        );
        assert_eq!(Violation::parse("Maximum Payload Violation"), None);
    }

    #[test]
    fn a_seed_file_must_hold_a_user_seed_and_be_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("user.nk");
        let write = |text: &str, mode: u32| {
            std::fs::write(&path, text).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        };
        let user = nkeys::KeyPair::new_user();
        write(&format!("{}\n", user.seed().unwrap()), 0o600);
        assert_eq!(read_nkey_seed(&path).unwrap(), user.seed().unwrap());

        write(&format!("{}\n", user.seed().unwrap()), 0o644);
        let err = read_nkey_seed(&path).unwrap_err().to_string();
        assert!(
            err.contains("mode 644") && err.contains("chmod 600"),
            "{err}"
        );

        write("not a seed\n", 0o600);
        let err = read_nkey_seed(&path).unwrap_err().to_string();
        assert!(err.contains("no valid NATS user NKey seed"), "{err}");

        let account = nkeys::KeyPair::new_account();
        write(&account.seed().unwrap(), 0o600);
        let err = read_nkey_seed(&path).unwrap_err().to_string();
        assert!(err.contains("starts with SU"), "{err}");
    }
}
