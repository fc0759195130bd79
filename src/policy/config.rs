//! The `[policy]` section: which events may leave (scope) and what text must be masked
//! (redaction), globally and per account.
//!
//! Kinds and detector names are enums, so a misspelt value is refused while the file is read,
//! with the key and the allowed values named. Everything a type cannot express (marked ids,
//! regexes, duplicate names) is checked by [`PolicyConfig::validate`].

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use super::detectors::{DEFAULT_PHONE_REGIONS, parse_region};
use crate::config_error::{ConfigError, invalid};
use crate::event::{ChatKind, EventKind, parse_marked_chat_id};

/// Longest custom detector name (it becomes a metric label and part of the redaction marker).
const MAX_CUSTOM_NAME: usize = 32;

/// Compiled size limit of one custom regex, so a config cannot make every event slow.
pub(crate) const CUSTOM_REGEX_SIZE_LIMIT: usize = 1 << 20;

/// Scope and redaction rules: the global ones, plus per-account overrides.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// Marked chat ids; when non-empty, only these chats pass.
    pub allow_chats: Vec<String>,
    /// Marked chat ids that never pass (beats every allow rule).
    pub deny_chats: Vec<String>,
    /// Chat kinds (private, group, supergroup, channel); when non-empty, only these pass.
    pub allow_chat_kinds: Vec<ChatKind>,
    /// Chat kinds that never pass.
    pub deny_chat_kinds: Vec<ChatKind>,
    /// Sender ids; when non-empty, only messages from these pass (deletions, which carry no
    /// sender, are not filtered by sender).
    pub allow_senders: Vec<String>,
    /// Sender ids whose messages never pass.
    pub deny_senders: Vec<String>,
    /// Event kinds (message, edit, delete, service) that are dropped.
    pub drop_event_kinds: Vec<EventKind>,
    /// Let Telegram's service chat 777000 (login codes) through; denied unless true, whatever
    /// the allow lists say.
    pub allow_telegram_service_chat: bool,
    /// What is masked in the text of events that pass.
    pub redaction: RedactionConfig,
    /// Overrides by account id: each key that is set replaces the global value for that account.
    pub accounts: BTreeMap<String, AccountPolicyConfig>,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            allow_chats: Vec::new(),
            deny_chats: Vec::new(),
            allow_chat_kinds: Vec::new(),
            deny_chat_kinds: Vec::new(),
            allow_senders: Vec::new(),
            deny_senders: Vec::new(),
            drop_event_kinds: vec![EventKind::Service],
            allow_telegram_service_chat: false,
            redaction: RedactionConfig::default(),
            accounts: BTreeMap::new(),
        }
    }
}

/// Which detectors run, and the operator's own patterns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedactionConfig {
    /// Built-in detectors that are on (default: all; empty: none).
    pub detectors: Vec<DetectorKind>,
    /// Extra patterns; each match becomes `[REDACTED:<name>]`.
    pub custom: Vec<CustomDetectorConfig>,
    /// ISO 3166 region codes (`DE`, `BR`) whose national phone formats (no `+`) are masked
    /// without a phone word near them, when libphonenumber finds them valid there.
    pub phone_regions: Vec<String>,
}

impl Default for RedactionConfig {
    fn default() -> Self {
        RedactionConfig {
            detectors: DetectorKind::ALL.to_vec(),
            custom: Vec::new(),
            phone_regions: default_phone_regions(),
        }
    }
}

/// The built-in `phone_regions` list.
pub fn default_phone_regions() -> Vec<String> {
    DEFAULT_PHONE_REGIONS
        .iter()
        .map(|r| r.to_string())
        .collect()
}

/// One operator-defined pattern.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomDetectorConfig {
    /// Kind name in markers and metrics: lower-case letters, digits, `_`; not a built-in name.
    pub name: String,
    /// A regular expression in the `regex` crate's syntax; every match is masked.
    pub pattern: String,
}

/// Per-account overrides: the same keys as the global section, each optional.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AccountPolicyConfig {
    /// Replaces `policy.allow_chats` for this account.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_chats: Option<Vec<String>>,
    /// Replaces `policy.deny_chats` for this account.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deny_chats: Option<Vec<String>>,
    /// Replaces `policy.allow_chat_kinds` for this account.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_chat_kinds: Option<Vec<ChatKind>>,
    /// Replaces `policy.deny_chat_kinds` for this account.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deny_chat_kinds: Option<Vec<ChatKind>>,
    /// Replaces `policy.allow_senders` for this account.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_senders: Option<Vec<String>>,
    /// Replaces `policy.deny_senders` for this account.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deny_senders: Option<Vec<String>>,
    /// Replaces `policy.drop_event_kinds` for this account.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drop_event_kinds: Option<Vec<EventKind>>,
    /// Replaces `policy.allow_telegram_service_chat` for this account.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_telegram_service_chat: Option<bool>,
    /// Replaces keys of `policy.redaction` for this account.
    #[serde(skip_serializing_if = "AccountRedactionConfig::is_empty")]
    pub redaction: AccountRedactionConfig,
}

/// Per-account redaction overrides.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AccountRedactionConfig {
    /// Replaces `policy.redaction.detectors` for this account.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detectors: Option<Vec<DetectorKind>>,
    /// Replaces `policy.redaction.custom` for this account.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub custom: Option<Vec<CustomDetectorConfig>>,
    /// Replaces `policy.redaction.phone_regions` for this account.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phone_regions: Option<Vec<String>>,
}

impl AccountRedactionConfig {
    /// True when nothing is overridden.
    pub fn is_empty(&self) -> bool {
        self.detectors.is_none() && self.custom.is_none() && self.phone_regions.is_none()
    }
}

/// The built-in detectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DetectorKind {
    /// E-mail addresses.
    Email,
    /// Phone numbers.
    Phone,
    /// Payment card numbers (Luhn-checked).
    PaymentCard,
    /// IBANs (mod-97-checked).
    Iban,
    /// Telegram (and similar) login codes, in login-code context.
    LoginCode,
    /// API tokens and keys.
    ApiToken,
    /// Telegram session strings and raw auth keys.
    SessionString,
}

impl DetectorKind {
    /// Every built-in detector.
    pub const ALL: [DetectorKind; 7] = [
        DetectorKind::Email,
        DetectorKind::Phone,
        DetectorKind::PaymentCard,
        DetectorKind::Iban,
        DetectorKind::LoginCode,
        DetectorKind::ApiToken,
        DetectorKind::SessionString,
    ];

    /// The name used in config, markers (`[REDACTED:<name>]`) and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            DetectorKind::Email => "email",
            DetectorKind::Phone => "phone",
            DetectorKind::PaymentCard => "payment_card",
            DetectorKind::Iban => "iban",
            DetectorKind::LoginCode => "login_code",
            DetectorKind::ApiToken => "api_token",
            DetectorKind::SessionString => "session_string",
        }
    }
}

impl fmt::Display for DetectorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for DetectorKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        DetectorKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| format!("unknown detector {s:?}: expected one of {}", names()))
    }
}

fn names() -> String {
    DetectorKind::ALL.map(DetectorKind::as_str).join(", ")
}

// ---------------------------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------------------------

/// The canonical decimal form of `s` as an i64, if `s` is exactly that form.
fn canonical_i64(s: &str) -> Option<i64> {
    let n: i64 = s.parse().ok()?;
    (n.to_string() == s).then_some(n)
}

const CHAT_ID_RULE: &str = "a marked chat id in canonical decimal form: a user id (123456), a basic group (-123456) or a supergroup/channel (-100…), no spaces, `+` or leading zeros";
const SENDER_ID_RULE: &str = "a user id in canonical decimal form (123456), or for posts signed by a channel its marked id (-100…); no spaces, `+` or leading zeros";

fn check_chat_ids(key: &str, ids: &[String]) -> Result<(), ConfigError> {
    for (i, id) in ids.iter().enumerate() {
        let ok = canonical_i64(id).is_some() && parse_marked_chat_id(id).is_some();
        if !ok {
            return Err(invalid(&format!("{key}[{i}]"), id, CHAT_ID_RULE));
        }
    }
    Ok(())
}

fn check_sender_ids(key: &str, ids: &[String]) -> Result<(), ConfigError> {
    for (i, id) in ids.iter().enumerate() {
        let ok = canonical_i64(id).is_some() && parse_marked_chat_id(id).is_some();
        if !ok {
            return Err(invalid(&format!("{key}[{i}]"), id, SENDER_ID_RULE));
        }
    }
    Ok(())
}

/// Checks custom detectors: names well-formed and unique, patterns compile and cannot match "".
pub(crate) fn check_custom(key: &str, custom: &[CustomDetectorConfig]) -> Result<(), ConfigError> {
    let mut seen = BTreeSet::new();
    for (i, c) in custom.iter().enumerate() {
        let name_ok = !c.name.is_empty()
            && c.name.len() <= MAX_CUSTOM_NAME
            && c.name.starts_with(|ch: char| ch.is_ascii_lowercase())
            && c.name
                .chars()
                .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '_');
        if !name_ok {
            return Err(invalid(
                &format!("{key}[{i}].name"),
                &c.name,
                format!(
                    "1 to {MAX_CUSTOM_NAME} lower-case letters, digits or `_`, starting with a letter"
                ),
            ));
        }
        if c.name.parse::<DetectorKind>().is_ok() {
            return Err(invalid(
                &format!("{key}[{i}].name"),
                &c.name,
                format!("a name that is not a built-in detector ({})", names()),
            ));
        }
        if !seen.insert(c.name.as_str()) {
            return Err(invalid(
                &format!("{key}[{i}].name"),
                &c.name,
                "a name not used by another custom detector in the same list",
            ));
        }
        let re = compile_custom(&c.pattern).map_err(|e| {
            invalid(
                &format!("{key}[{i}].pattern"),
                &c.pattern,
                format!(
                    "a regular expression in the regex crate's syntax; it does not compile: {e}"
                ),
            )
        })?;
        if re.is_match("") {
            return Err(invalid(
                &format!("{key}[{i}].pattern"),
                &c.pattern,
                "a pattern that cannot match empty text (it would match everywhere)",
            ));
        }
    }
    Ok(())
}

/// Checks that every phone region is a region libphonenumber has metadata for.
pub(crate) fn check_phone_regions(key: &str, regions: &[String]) -> Result<(), ConfigError> {
    for (i, r) in regions.iter().enumerate() {
        if parse_region(r).is_none() {
            return Err(invalid(
                &format!("{key}[{i}]"),
                r,
                "an upper-case ISO 3166 region code that libphonenumber knows (DE, BR, JP, …)",
            ));
        }
    }
    Ok(())
}

/// Compiles a custom pattern with the size limit every custom pattern gets.
pub(crate) fn compile_custom(pattern: &str) -> Result<regex::Regex, regex::Error> {
    regex::RegexBuilder::new(pattern)
        .size_limit(CUSTOM_REGEX_SIZE_LIMIT)
        .build()
}

impl PolicyConfig {
    /// Checks every rule a value must meet beyond its type; errors name key, value and what is
    /// allowed (`policy.deny_chats[2]`, `policy.accounts.42.redaction.custom[0].pattern`).
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_chat_ids("policy.allow_chats", &self.allow_chats)?;
        check_chat_ids("policy.deny_chats", &self.deny_chats)?;
        check_sender_ids("policy.allow_senders", &self.allow_senders)?;
        check_sender_ids("policy.deny_senders", &self.deny_senders)?;
        check_custom("policy.redaction.custom", &self.redaction.custom)?;
        check_phone_regions(
            "policy.redaction.phone_regions",
            &self.redaction.phone_regions,
        )?;
        for (account, o) in &self.accounts {
            let ok = canonical_i64(account).is_some_and(|n| n > 0);
            if !ok {
                return Err(invalid(
                    "policy.accounts",
                    account,
                    "section names under [policy.accounts] are account (user) ids: positive decimal, no leading zeros",
                ));
            }
            let key = |k: &str| format!("policy.accounts.{account}.{k}");
            if let Some(v) = &o.allow_chats {
                check_chat_ids(&key("allow_chats"), v)?;
            }
            if let Some(v) = &o.deny_chats {
                check_chat_ids(&key("deny_chats"), v)?;
            }
            if let Some(v) = &o.allow_senders {
                check_sender_ids(&key("allow_senders"), v)?;
            }
            if let Some(v) = &o.deny_senders {
                check_sender_ids(&key("deny_senders"), v)?;
            }
            if let Some(v) = &o.redaction.custom {
                check_custom(&key("redaction.custom"), v)?;
            }
            if let Some(v) = &o.redaction.phone_regions {
                check_phone_regions(&key("redaction.phone_regions"), v)?;
            }
        }
        Ok(())
    }
}
