//! The local login budget: at most `telegram.login_attempts_per_day` code requests per phone number
//! within any 24 hours. Telegram locks an account after about five attempts a day, and a node
//! cannot ask Telegram how many are left, so the count is kept here, across restarts, in a file of
//! mode 0600 in the data dir (`login-budget.json`), keyed by the keyed hash of the number.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// The budget's file name in the data dir.
pub const BUDGET_FILE: &str = "login-budget.json";
/// The budget's window.
pub const WINDOW_US: i64 = 24 * 3600 * 1_000_000;

/// Where one phone number's budget stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BudgetStatus {
    /// Attempts allowed per 24 hours.
    pub limit: u32,
    /// Attempts made within the last 24 hours.
    pub used: u32,
    /// Attempts still allowed now.
    pub remaining: u32,
    /// When the oldest counted attempt leaves the window, freeing one (microseconds since the
    /// epoch); `None` when no attempt is counted.
    pub resets_at_us: Option<i64>,
}

/// Why the budget could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum BudgetError {
    #[error("cannot read the login budget {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the login budget {path} is not valid ({message}); move it away to start counting afresh \
         (Telegram may still lock numbers tried too often today)"
    )]
    Corrupt { path: PathBuf, message: String },
    #[error("cannot write the login budget {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the login budget {path} has mode {mode:o}; it must not be readable by group or others \
         (chmod 600 it)"
    )]
    TooOpen { path: PathBuf, mode: u32 },
}

/// The persisted budget of every phone number tried on this node.
pub struct LoginBudget {
    path: PathBuf,
    limit: u32,
    /// phone hash → times of counted attempts (microseconds since the epoch), oldest first.
    attempts: Mutex<BTreeMap<String, Vec<i64>>>,
}

impl std::fmt::Debug for LoginBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginBudget")
            .field("path", &self.path)
            .field("limit", &self.limit)
            .finish_non_exhaustive()
    }
}

impl LoginBudget {
    /// Opens (or starts) the budget in `data_dir`.
    pub fn open(data_dir: &Path, limit: u32) -> Result<LoginBudget, BudgetError> {
        let path = data_dir.join(BUDGET_FILE);
        let attempts = match std::fs::read(&path) {
            Ok(bytes) => {
                let mode = std::fs::metadata(&path)
                    .map_err(|source| BudgetError::Read {
                        path: path.clone(),
                        source,
                    })?
                    .permissions()
                    .mode();
                if mode & 0o077 != 0 {
                    return Err(BudgetError::TooOpen {
                        path,
                        mode: mode & 0o777,
                    });
                }
                serde_json::from_slice(&bytes).map_err(|e| BudgetError::Corrupt {
                    path: path.clone(),
                    message: e.to_string(),
                })?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(source) => return Err(BudgetError::Read { path, source }),
        };
        Ok(LoginBudget {
            path,
            limit,
            attempts: Mutex::new(attempts),
        })
    }

    /// The status of `phone_hash` at `now_us`.
    pub fn status(&self, phone_hash: &str, now_us: i64) -> BudgetStatus {
        let map = self.attempts.lock().unwrap_or_else(|p| p.into_inner());
        self.status_of(
            map.get(phone_hash).map(Vec::as_slice).unwrap_or(&[]),
            now_us,
        )
    }

    fn status_of(&self, times: &[i64], now_us: i64) -> BudgetStatus {
        let recent: Vec<i64> = times
            .iter()
            .copied()
            .filter(|t| now_us - t < WINDOW_US)
            .collect();
        let used = u32::try_from(recent.len()).unwrap_or(u32::MAX);
        BudgetStatus {
            limit: self.limit,
            used,
            remaining: self.limit.saturating_sub(used),
            resets_at_us: recent.first().map(|t| t + WINDOW_US),
        }
    }

    /// Counts one attempt for `phone_hash` if the budget allows it (and persists it before
    /// returning); otherwise returns the status that refuses it.
    pub fn try_spend(
        &self,
        phone_hash: &str,
        now_us: i64,
    ) -> Result<Result<BudgetStatus, BudgetStatus>, BudgetError> {
        let mut map = self.attempts.lock().unwrap_or_else(|p| p.into_inner());
        let times = map.entry(phone_hash.to_string()).or_default();
        times.retain(|t| now_us - t < WINDOW_US);
        if u32::try_from(times.len()).unwrap_or(u32::MAX) >= self.limit {
            return Ok(Err(self.status_of(times, now_us)));
        }
        times.push(now_us);
        let status = self.status_of(times, now_us);
        map.retain(|_, t| !t.is_empty());
        self.persist(&map)?;
        Ok(Ok(status))
    }

    /// Writes the budget atomically (temporary file of mode 0600, fsync, rename).
    fn persist(&self, map: &BTreeMap<String, Vec<i64>>) -> Result<(), BudgetError> {
        let write = |source| BudgetError::Write {
            path: self.path.clone(),
            source,
        };
        let body = serde_json::to_vec(map).map_err(|e| write(std::io::Error::other(e)))?;
        let tmp = self.path.with_extension("json.tmp");
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(write)?;
        file.write_all(&body).map_err(write)?;
        file.sync_all().map_err(write)?;
        std::fs::rename(&tmp, &self.path).map_err(write)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sixth_attempt_is_refused_until_the_first_leaves_the_window_even_after_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let budget = LoginBudget::open(dir.path(), 5).unwrap();
        let t0 = 1_000_000_000_000;
        for i in 0..5 {
            let s = budget.try_spend("h", t0 + i).unwrap().unwrap();
            assert_eq!(s.remaining, 4 - i as u32);
        }
        let refused = budget.try_spend("h", t0 + 10).unwrap().unwrap_err();
        assert_eq!(refused.remaining, 0);
        assert_eq!(refused.resets_at_us, Some(t0 + WINDOW_US));
        assert_eq!(budget.status("other", t0).remaining, 5);

        let again = LoginBudget::open(dir.path(), 5).unwrap();
        assert!(again.try_spend("h", t0 + 20).unwrap().is_err());
        assert!(again.try_spend("h", t0 + WINDOW_US).unwrap().is_ok());
        let mode = std::fs::metadata(dir.path().join(BUDGET_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
