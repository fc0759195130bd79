//! Why a configuration was refused. Its own module, below `config` and the parts whose
//! settings `config` embeds (`policy`), so those parts can report a bad setting without importing
//! the configuration that contains them.

use std::fmt;
use std::path::PathBuf;

/// Why a configuration was refused; each names what to fix.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid TOML {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("{origin}: key `{key}`: {message}")]
    Type {
        origin: String,
        key: String,
        message: String,
    },
    #[error("{origin}: key `{key}` = {value}: {allowed}")]
    Invalid {
        origin: String,
        key: String,
        value: String,
        allowed: String,
    },
    #[error("environment variable {var} is not a config key{hint}")]
    UnknownEnv { var: String, hint: String },
}

/// A [`ConfigError::Invalid`] for `key`; the loader fills in where the value came from.
pub fn invalid(key: &str, value: impl fmt::Debug, allowed: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        origin: String::new(),
        key: key.to_string(),
        value: format!("{value:?}"),
        allowed: allowed.into(),
    }
}
