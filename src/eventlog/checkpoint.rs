//! The body of a checkpoint record and the key it is indexed under.
//!
//! The index maps (account, scope) to the seq of the newest checkpoint record, so reading a
//! checkpoint does not scan the log; it is derived state and can be rebuilt from the log.

use serde::{Deserialize, Serialize};

/// Separates account and scope in an index key; account ids may therefore not contain it.
const SEPARATOR: u8 = 0x00;

/// How far one upstream source of one account has been consumed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The account the source belongs to.
    pub account_id: String,
    /// Which source, e.g. `updates` or `backfill:<chat>`.
    pub scope: String,
    /// An opaque cursor into that source.
    pub position: String,
}

/// The index key of (account, scope), or `None` when the account id holds the separator.
pub(super) fn index_key(account_id: &str, scope: &str) -> Option<Vec<u8>> {
    let mut key = account_prefix(account_id)?;
    key.extend_from_slice(scope.as_bytes());
    Some(key)
}

/// The prefix shared by all index keys of one account.
pub(super) fn account_prefix(account_id: &str) -> Option<Vec<u8>> {
    if account_id.as_bytes().contains(&SEPARATOR) {
        return None;
    }
    let mut key = Vec::with_capacity(account_id.len() + 1);
    key.extend_from_slice(account_id.as_bytes());
    key.push(SEPARATOR);
    Some(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_prefix_does_not_match_a_longer_account_id() {
        let key = index_key("12", "updates").unwrap();
        assert!(key.starts_with(&account_prefix("12").unwrap()));
        assert!(!key.starts_with(&account_prefix("1").unwrap()));
        assert_eq!(index_key("a\0b", "updates"), None);
    }
}
