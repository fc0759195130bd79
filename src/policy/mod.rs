//! Scope filtering (which events may leave) and redaction (what text may leave).
//!
//! Everything that reaches TG_CLEAN, and from there Switchboard, has passed [`Policy::decide`].
//! It exists so that invariant 4 of the design ("nothing private leaks") holds at one place:
//! denied chats — Telegram's service chat 777000 with its login codes first of all — are dropped
//! with a named rule (which the caller audits), and in every event that passes, e-mails, phone
//! numbers, card numbers, IBANs, login codes, API tokens, session strings and the operator's own
//! patterns are replaced by `[REDACTED:<kind>]` in the text, the chat title, the sender's name
//! and media file names.
//!
//! Parts: [`config`] (the typed `[policy]` section and its validation), [`scope`] (chat, kind and
//! sender rules), [`detectors`] (what each detector catches and deliberately does not),
//! [`context`] (the per-language context words the detectors consult), [`fold`] (every
//! script's digits as ASCII), [`redact`] (prefilter, merging, masking), [`policy_test`]
//! (`tgingest policy test`).
//!
//! Metrics: `decide` itself increments `tgingest_scope_drops_total{rule}` per drop and
//! `tgingest_redactions_total{kind}` per masked span, on whatever recorder is installed.
//! Nothing here logs message text or ids.

pub mod config;
pub mod context;
pub mod detectors;
pub mod fold;
pub mod policy_test;
pub mod redact;
pub mod scope;

use std::collections::HashMap;
use std::sync::Arc;

pub use self::config::{
    AccountPolicyConfig, AccountRedactionConfig, CustomDetectorConfig, DetectorKind, PolicyConfig,
    RedactionConfig,
};
pub use self::policy_test::{PolicyTestSummary, run_policy_test};
pub use self::redact::{Finding, RedactionKind, RedactionTally, Redactor};
pub use self::scope::DropRule;

use self::scope::ScopeRules;
use crate::config_error::ConfigError;
use crate::event::Event;

/// Counter of events dropped by scope rules, labelled `rule` ([`DropRule::as_str`]).
pub const SCOPE_DROPS_TOTAL: &str = "tgingest_scope_drops_total";

/// Counter of masked spans, labelled `kind` ([`RedactionKind::name`]).
pub const REDACTIONS_TOTAL: &str = "tgingest_redactions_total";

/// Registers the help text of this module's metrics (call once at start-up, after the recorder).
pub fn describe_metrics() {
    metrics::describe_counter!(
        SCOPE_DROPS_TOTAL,
        "Events dropped by the scope filter, by the rule that dropped them"
    );
    metrics::describe_counter!(
        REDACTIONS_TOTAL,
        "Spans masked by redaction, by detector kind"
    );
}

/// What to do with one event.
#[derive(Debug, Clone, PartialEq)]
#[expect(
    clippy::large_enum_variant,
    reason = "Keep is the common case; boxing it would allocate per event to shrink the rare Drop"
)]
pub enum Decision {
    /// Send it on, as this redacted copy.
    Keep {
        /// The event with every finding masked (identical to the input when nothing was found).
        event: Event,
        /// Masked spans by kind, sorted by kind name; empty when nothing was masked.
        redactions: Vec<(RedactionKind, u32)>,
    },
    /// Do not send it; `rule` says why (audit it).
    Drop {
        /// The first rule, in precedence order, that the event breaks.
        rule: DropRule,
    },
}

/// Scope rules and redactors of one account (or the global ones).
#[derive(Debug)]
struct Profile {
    scope: ScopeRules,
    redactor: Arc<Redactor>,
}

/// A compiled [`PolicyConfig`]: cheap to share (`Arc`), safe to use from many threads.
#[derive(Debug)]
pub struct Policy {
    global: Profile,
    accounts: HashMap<String, Profile>,
}

impl Policy {
    /// Validates `config` and compiles every rule and pattern once.
    pub fn new(config: &PolicyConfig) -> Result<Policy, ConfigError> {
        config.validate()?;
        let global_redactor = Arc::new(Redactor::new(&config.redaction)?);
        let global = Profile {
            scope: ScopeRules::new(config, None),
            redactor: Arc::clone(&global_redactor),
        };
        let mut accounts = HashMap::new();
        for (account, o) in &config.accounts {
            let redactor = if o.redaction.is_empty() {
                Arc::clone(&global_redactor)
            } else {
                let detectors = o
                    .redaction
                    .detectors
                    .as_ref()
                    .unwrap_or(&config.redaction.detectors);
                let custom = o
                    .redaction
                    .custom
                    .as_ref()
                    .unwrap_or(&config.redaction.custom);
                let regions = o
                    .redaction
                    .phone_regions
                    .as_ref()
                    .unwrap_or(&config.redaction.phone_regions);
                Arc::new(Redactor::from_parts(
                    detectors,
                    custom,
                    regions,
                    &format!("policy.accounts.{account}.redaction"),
                )?)
            };
            accounts.insert(
                account.clone(),
                Profile {
                    scope: ScopeRules::new(config, Some(o)),
                    redactor,
                },
            );
        }
        Ok(Policy { global, accounts })
    }

    fn profile(&self, account_id: &str) -> &Profile {
        self.accounts.get(account_id).unwrap_or(&self.global)
    }

    /// The redactor that applies to `account_id` (its override, or the global one).
    pub fn redactor(&self, account_id: &str) -> &Redactor {
        &self.profile(account_id).redactor
    }

    /// Decides on `event`: the rule that drops it, or a redacted copy. Counts metrics.
    pub fn decide(&self, event: &Event) -> Decision {
        let profile = self.profile(&event.account_id);
        if let Err(rule) = profile.scope.check(event) {
            return drop(rule);
        }
        self.keep(profile, event.clone())
    }

    /// [`Policy::decide`] without copying the event.
    pub fn decide_owned(&self, event: Event) -> Decision {
        let profile = self.profile(&event.account_id);
        if let Err(rule) = profile.scope.check(&event) {
            return drop(rule);
        }
        self.keep(profile, event)
    }

    fn keep(&self, profile: &Profile, mut event: Event) -> Decision {
        let r = &profile.redactor;
        let mut tally = RedactionTally::default();
        redact_field(r, &mut event.text, &mut tally);
        if let Some(title) = event.chat.title.as_mut() {
            redact_field(r, title, &mut tally);
        }
        if let Some(name) = event.sender.as_mut().and_then(|s| s.display_name.as_mut()) {
            redact_field(r, name, &mut tally);
        }
        if let Some(file) = event.media.as_mut().and_then(|m| m.file_name.as_mut()) {
            redact_field(r, file, &mut tally);
        }
        let redactions = tally.into_sorted();
        for (kind, n) in &redactions {
            let label = match kind {
                RedactionKind::Builtin(k) => metrics::SharedString::from(k.as_str()),
                RedactionKind::Custom(name) => metrics::SharedString::from(Arc::clone(name)),
            };
            metrics::counter!(REDACTIONS_TOTAL, "kind" => label).increment(u64::from(*n));
        }
        Decision::Keep { event, redactions }
    }
}

fn drop(rule: DropRule) -> Decision {
    metrics::counter!(SCOPE_DROPS_TOTAL, "rule" => rule.as_str()).increment(1);
    Decision::Drop { rule }
}

fn redact_field(r: &Redactor, field: &mut String, tally: &mut RedactionTally) {
    if let std::borrow::Cow::Owned(masked) = r.redact(field, tally) {
        *field = masked;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Chat, ChatKind, EventKind, Media, MediaKind, Sender, Source, event_id};
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};

    fn event(text: &str) -> Event {
        let chat = "-1001234".to_string();
        Event {
            schema_version: crate::event::SCHEMA_VERSION,
            event_id: event_id("42", &chat, "7", EventKind::Message, 0),
            account_id: "42".into(),
            kind: EventKind::Message,
            chat: Chat {
                kind: ChatKind::Supergroup,
                id: chat,
                title: Some("ops a@example.com".into()),
            },
            sender: Some(Sender {
                id: "99".into(),
                display_name: Some("Bob +44 20 7946 0958".into()),
                is_self: false,
            }),
            message_id: "7".into(),
            topic_id: None,
            reply_to: None,
            sent_at_us: 0,
            edit_version: 0,
            text: text.into(),
            media: Some(Media {
                kind: MediaKind::Document,
                mime_type: None,
                size_bytes: None,
                file_name: Some("scan 4111 1111 1111 1111.pdf".into()),
            }),
            source: Source::Live,
            observed_at_us: 0,
        }
    }

    #[test]
    fn kept_events_are_masked_in_text_title_sender_name_and_file_name() {
        let policy = Policy::new(&PolicyConfig::default()).unwrap();
        let Decision::Keep { event, redactions } = policy.decide(&event("mail b@example.org"))
        else {
            panic!("dropped")
        };
        assert_eq!(event.text, "mail [REDACTED:email]");
        assert_eq!(event.chat.title.as_deref(), Some("ops [REDACTED:email]"));
        assert_eq!(
            event.sender.unwrap().display_name.as_deref(),
            Some("Bob [REDACTED:phone]")
        );
        assert_eq!(
            event.media.unwrap().file_name.as_deref(),
            Some("scan [REDACTED:payment_card].pdf")
        );
        let names: Vec<(&str, u32)> = redactions.iter().map(|(k, n)| (k.name(), *n)).collect();
        assert_eq!(names, [("email", 2), ("payment_card", 1), ("phone", 1)]);
    }

    #[test]
    fn decide_counts_drops_by_rule_and_redactions_by_kind() {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        let policy = Policy::new(&PolicyConfig::default()).unwrap();
        metrics::with_local_recorder(&recorder, || {
            let mut service = event("x");
            service.kind = EventKind::Service;
            policy.decide(&service);
            policy.decide(&event("c@example.com d@example.com"));
        });
        let mut seen = Vec::new();
        for (key, _, _, value) in snapshotter.snapshot().into_vec() {
            let labels: Vec<String> = key
                .key()
                .labels()
                .map(|l| format!("{}={}", l.key(), l.value()))
                .collect();
            let DebugValue::Counter(n) = value else {
                continue;
            };
            seen.push(format!("{}{{{}}} {n}", key.key().name(), labels.join(",")));
        }
        seen.sort();
        assert_eq!(
            seen,
            [
                "tgingest_redactions_total{kind=email} 3",
                "tgingest_redactions_total{kind=payment_card} 1",
                "tgingest_redactions_total{kind=phone} 1",
                "tgingest_scope_drops_total{rule=drop_event_kinds:service} 1",
            ]
        );
    }
}
