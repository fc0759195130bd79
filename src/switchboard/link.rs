//! What the client needs to reach Switchboard safely: the CA certificates an `https://` URL is
//! checked against (`switchboard.ca_file`), the bearer token (`switchboard.auth_token_file` or
//! `auth_token`), and how a failed TLS handshake is told apart from Switchboard being down.

use std::collections::HashMap;
use std::error::Error as _;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use reqwest::header::HeaderValue;

use crate::config::SwitchboardConfig;

/// Why the configured CA file or token cannot be used; each names the file and what to fix.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("switchboard.ca_file {path}: cannot read it: {source}")]
    CaRead {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "switchboard.ca_file {path}: {problem}; give a PEM file with the CA certificate(s) that \
         sign Switchboard's certificate (-----BEGIN CERTIFICATE----- blocks)"
    )]
    CaContent { path: PathBuf, problem: String },
    #[error("switchboard.auth_token_file {path}: cannot read it: {source}")]
    TokenRead {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("switchboard.auth_token_file {path} is empty; put the bearer token in it")]
    TokenEmpty { path: PathBuf },
    #[error(
        "{origin}: the token cannot be sent as an HTTP header (it holds a control character or \
         a line break inside it)"
    )]
    TokenChars { origin: String },
}

/// The CA certificates in `path` (PEM; every certificate in the file is trusted).
pub fn trust_roots(path: &Path) -> Result<Vec<reqwest::Certificate>, LinkError> {
    let pem = std::fs::read(path).map_err(|source| LinkError::CaRead {
        path: path.to_path_buf(),
        source,
    })?;
    let content = |problem: String| LinkError::CaContent {
        path: path.to_path_buf(),
        problem,
    };
    let certs = reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|e| content(format!("not a PEM certificate bundle ({e})")))?;
    if certs.is_empty() {
        return Err(content("it holds no certificate".into()));
    }
    Ok(certs)
}

/// The `Authorization` header value, if a token is configured: the file's content (read now,
/// surrounding white space and the trailing newline trimmed) or the inline `auth_token`. Marked
/// sensitive, so HTTP-level debug output never shows it.
pub fn bearer_header(cfg: &SwitchboardConfig) -> Result<Option<HeaderValue>, LinkError> {
    let (token, origin) = if !cfg.auth_token_file.as_os_str().is_empty() {
        let path = &cfg.auth_token_file;
        let text = std::fs::read_to_string(path).map_err(|source| LinkError::TokenRead {
            path: path.clone(),
            source,
        })?;
        let token = text.trim().to_string();
        if token.is_empty() {
            return Err(LinkError::TokenEmpty { path: path.clone() });
        }
        (
            token,
            format!("switchboard.auth_token_file {}", path.display()),
        )
    } else if cfg.auth_token.is_set() {
        (
            cfg.auth_token.expose().to_string(),
            "switchboard.auth_token".to_string(),
        )
    } else {
        return Ok(None);
    };
    let mut value = HeaderValue::from_str(&format!("Bearer {token}"))
        .map_err(|_| LinkError::TokenChars { origin })?;
    value.set_sensitive(true);
    Ok(Some(value))
}

/// What was wrong with Switchboard's certificate, when `e` failed in the TLS handshake because
/// of it (not for a refused or broken connection, which is Switchboard being away).
pub fn certificate_problem(e: &reqwest::Error) -> Option<String> {
    // Walk both the `source()` chain and what each `io::Error` wraps: `io::Error::source`
    // skips the error it wraps, and hyper nests rustls's error in two of them.
    let mut todo: Vec<&(dyn std::error::Error + 'static)> = e.source().into_iter().collect();
    while let Some(err) = todo.pop() {
        if let Some(rustls::Error::InvalidCertificate(why)) = err.downcast_ref::<rustls::Error>() {
            return Some(describe(why));
        }
        if let Some(inner) = err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            todo.push(inner);
        }
        todo.extend(err.source());
    }
    None
}

fn describe(why: &rustls::CertificateError) -> String {
    use rustls::CertificateError as C;
    match why {
        C::UnknownIssuer => "its certificate is not signed by a trusted CA (unknown issuer)".into(),
        C::Expired | C::ExpiredContext { .. } => "its certificate has expired".into(),
        C::NotValidYet | C::NotValidYetContext { .. } => "its certificate is not valid yet".into(),
        C::NotValidForName | C::NotValidForNameContext { .. } => {
            "its certificate is not valid for the host name in switchboard.url".into()
        }
        C::Revoked => "its certificate has been revoked".into(),
        other => format!("its certificate was refused ({other:?})"),
    }
}

/// The refusal (token or certificate) of the last call to each Switchboard URL, until a call
/// there succeeds. Kept per process rather than per client: `/readyz` starts before the
/// pipeline builds its client, and replays build their own; they all report here.
fn refusals() -> &'static Mutex<HashMap<String, String>> {
    static REFUSALS: OnceLock<Mutex<HashMap<String, String>>> = OnceLock::new();
    REFUSALS.get_or_init(Default::default)
}

/// Records how the last call to `url` went: `Some(why)` when Switchboard refused the link.
pub(crate) fn note_outcome(url: &str, refused: Option<String>) {
    let mut map = refusals().lock().unwrap_or_else(|p| p.into_inner());
    match refused {
        Some(why) => {
            map.insert(url.to_string(), why);
        }
        None => {
            map.remove(url);
        }
    }
}

/// Why the last call to `url` was refused (bad token, certificate), if it was.
pub fn refusal(url: &str) -> Option<String> {
    refusals()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(url)
        .cloned()
}
