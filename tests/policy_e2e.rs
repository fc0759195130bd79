//! The whole pipeline under a non-default policy, judged by an oracle that never runs `Policy`.
//!
//! Why: the other exactly-once checks compute "expected" with the same `Policy` and envelope code
//! as the pipeline, under the default policy, so a pipeline that ignored the configured policy, or
//! a policy that dropped or masked the wrong things, would agree with itself. Here what must
//! arrive comes from the simulator's ground truth (the events it generated, and the labelled span
//! of the personal data it put in each text) and the rules below, written out as plain code:
//!
//! - account 0's basic group is denied (`deny_chats`), and so is account 1's most active other
//!   member (`deny_senders`);
//! - edits are dropped (`drop_event_kinds`), service messages too (as by default), and chat 777000;
//! - account 2 has an override: edits pass, channels are denied, the `api_token` detector is off;
//! - a custom detector masks GitHub tokens as `[REDACTED:github_token]` everywhere.
//!
//! Every envelope the fake Switchboard stored is compared, field by field, with what the
//! `ingest.v1` mapping documented in `switchboard::envelope` says that event must look like.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde_json::{Value, json};
use support::rig::{Rig, simulation};
use tgingest::event::{ChatKind, Event, EventKind, TELEGRAM_SERVICE_CHAT};
use tgingest::policy::{
    AccountPolicyConfig, AccountRedactionConfig, CustomDetectorConfig, DetectorKind, PolicyConfig,
};
use tgingest::switchboard::media_placeholder;
use tgingest::telegram::simulated::{
    ChatRole, Pii, PiiKind, PositionKind, SimulatedWorld, SimulatorConfig,
};

const WAIT: Duration = Duration::from_secs(60);

/// The custom detector's name, and its pattern: GitHub classic tokens.
const CUSTOM_NAME: &str = "github_token";
const CUSTOM_PATTERN: &str = r"ghp_[A-Za-z0-9]{36}";
/// The prefix of the tokens the custom pattern is written for (the simulator's GitHub tokens).
const CUSTOM_PREFIX: &str = "ghp_";

/// The run's rules, as the plain data the oracle reads.
struct Rules {
    /// Account 0's basic group.
    denied_chat: String,
    /// The sender (not the account itself) with the most events in account 1.
    denied_sender: String,
    /// Account 2, which has the override.
    override_account: String,
}

impl Rules {
    /// Picks the denied chat and sender from the simulator's own chats and events.
    fn pick(world: &SimulatedWorld, upto: u64) -> Rules {
        let denied_chat = world
            .chats(0)
            .into_iter()
            .find(|c| c.role == ChatRole::Group)
            .expect("every account has a basic group")
            .chat
            .id;
        let mut senders: HashMap<String, usize> = HashMap::new();
        for e in world.expected(1, upto) {
            if let Some(s) = e
                .sender
                .filter(|s| !s.is_self && e.chat.id != TELEGRAM_SERVICE_CHAT)
            {
                *senders.entry(s.id).or_default() += 1;
            }
        }
        let denied_sender = senders
            .into_iter()
            .max_by_key(|(id, n)| (*n, id.clone()))
            .expect("account 1 has other senders")
            .0;
        Rules {
            denied_chat,
            denied_sender,
            override_account: world.account_id(2),
        }
    }

    /// The `[policy]` section that says what [`Rules::denial`] and [`Rules::mask`] say.
    fn policy(&self) -> PolicyConfig {
        let custom = vec![CustomDetectorConfig {
            name: CUSTOM_NAME.into(),
            pattern: CUSTOM_PATTERN.into(),
        }];
        let without_api_token = DetectorKind::ALL
            .into_iter()
            .filter(|k| *k != DetectorKind::ApiToken)
            .collect();
        let mut policy = PolicyConfig {
            deny_chats: vec![self.denied_chat.clone()],
            deny_senders: vec![self.denied_sender.clone()],
            drop_event_kinds: vec![EventKind::Service, EventKind::Edit],
            ..PolicyConfig::default()
        };
        policy.redaction.custom = custom;
        policy.accounts.insert(
            self.override_account.clone(),
            AccountPolicyConfig {
                drop_event_kinds: Some(vec![EventKind::Service]),
                deny_chat_kinds: Some(vec![ChatKind::Channel]),
                redaction: AccountRedactionConfig {
                    detectors: Some(without_api_token),
                    ..AccountRedactionConfig::default()
                },
                ..AccountPolicyConfig::default()
            },
        );
        policy
    }

    /// The rule (its metric label) that must drop `e`, or `None` when it must pass; rules in the
    /// documented precedence order, so the first that applies is the one the filter reports.
    fn denial(&self, e: &Event) -> Option<&'static str> {
        let overridden = e.account_id == self.override_account;
        if e.chat.id == TELEGRAM_SERVICE_CHAT {
            return Some("telegram_service_chat");
        }
        if e.kind == EventKind::Service {
            return Some("drop_event_kinds:service");
        }
        if e.kind == EventKind::Edit && !overridden {
            return Some("drop_event_kinds:edit");
        }
        if e.chat.id == self.denied_chat {
            return Some("deny_chats");
        }
        if overridden && e.chat.kind == ChatKind::Channel {
            return Some("deny_chat_kinds");
        }
        if e.sender
            .as_ref()
            .is_some_and(|s| s.id == self.denied_sender)
        {
            return Some("deny_senders");
        }
        None
    }

    /// The marker that replaces `pii` in `account`'s texts, or `None` when it stays as it is.
    fn mask(&self, account: &str, pii: &Pii) -> Option<&'static str> {
        Some(match pii.kind {
            PiiKind::ApiToken if pii.value.starts_with(CUSTOM_PREFIX) => CUSTOM_NAME,
            PiiKind::ApiToken if account == self.override_account => return None,
            PiiKind::ApiToken => "api_token",
            PiiKind::Email => "email",
            PiiKind::Phone => "phone",
            PiiKind::CardNumber => "payment_card",
            PiiKind::Iban => "iban",
            PiiKind::LoginCode => "login_code",
        })
    }
}

/// What the simulator's ground truth says must arrive, and the counts behind it.
#[derive(Default)]
struct Truth {
    /// Event id → the event as it must arrive (text masked where the labels say).
    expected: HashMap<String, Event>,
    /// Unique events the simulation generates (re-deliveries not counted).
    generated: usize,
    /// Events the rules deny, by rule.
    denied: BTreeMap<String, u64>,
    /// Spans the rules mask, by marker name; and spans they leave as they are.
    masked: BTreeMap<&'static str, usize>,
    in_clear: usize,
    /// Edits of the override account that pass (the global rules would drop them).
    override_edits: usize,
}

fn truth(world: &SimulatedWorld, upto: u64, rules: &Rules) -> Truth {
    let mut t = Truth::default();
    for i in 0..world.accounts() {
        for n in 0..upto {
            let p = world.event_at(i, n);
            if matches!(p.kind, PositionKind::Duplicate { .. }) {
                continue;
            }
            for mut e in p.events {
                t.generated += 1;
                if let Some(rule) = rules.denial(&e) {
                    *t.denied.entry(rule.to_string()).or_default() += 1;
                    continue;
                }
                if let Some(pii) = &p.pii {
                    match rules.mask(&e.account_id, pii) {
                        Some(name) => {
                            *t.masked.entry(name).or_default() += 1;
                            e.text
                                .replace_range(pii.span.clone(), &format!("[REDACTED:{name}]"));
                        }
                        None => t.in_clear += 1,
                    }
                }
                if e.kind == EventKind::Edit {
                    t.override_edits += 1;
                }
                t.expected.insert(e.event_id.clone(), e);
            }
        }
    }
    t
}

/// `tg:<chat>:<message>` plus `:edit:<version>` or `:delete`, as the contract keys changes.
fn idempotency_key(e: &Event) -> String {
    let base = format!("tg:{}:{}", e.chat.id, e.message_id);
    match e.kind {
        EventKind::Edit => format!("{base}:edit:{}", e.edit_version),
        EventKind::Delete => format!("{base}:delete"),
        EventKind::Message | EventKind::Service => base,
    }
}

/// `payload.normalized_text`: the text (after a media placeholder), then the reference line.
/// The placeholders are the envelope module's own table: fixed strings no policy touches.
fn normalized_text(e: &Event) -> String {
    let text = e.text.trim();
    let body = match (e.kind, &e.media) {
        (EventKind::Delete, _) => "[deleted message]".to_string(),
        (_, Some(m)) if text.is_empty() => media_placeholder(m.kind).to_string(),
        (_, Some(m)) => format!("{} {text}", media_placeholder(m.kind)),
        (_, None) if text.is_empty() => "[empty message]".to_string(),
        (_, None) => text.to_string(),
    };
    format!("{body}\n[{}]", idempotency_key(e))
}

/// The envelope fields that must hold for `want` (JSON pointer → value; `None` = absent).
fn want_fields(want: &Event) -> Vec<(&'static str, Option<Value>)> {
    let sender = want.sender.as_ref();
    vec![
        (
            "/source/endpoint_identity",
            Some(json!(format!("telegram:user:{}", want.account_id))),
        ),
        ("/event/external_event_id", Some(json!(want.message_id))),
        ("/event/external_thread_id", Some(json!(want.chat.id))),
        (
            "/control/idempotency_key",
            Some(json!(idempotency_key(want))),
        ),
        (
            "/sender/identity",
            Some(json!(sender.map_or(&want.chat.id, |s| &s.id))),
        ),
        (
            "/sender/display_name",
            sender
                .and_then(|s| s.display_name.as_ref())
                .map(|n| json!(n)),
        ),
        ("/sender/chat_type", Some(json!(want.chat.kind.as_str()))),
        (
            "/payload/normalized_text",
            Some(json!(normalized_text(want))),
        ),
        ("/payload/raw/event_id", Some(json!(want.event_id))),
        ("/payload/raw/kind", Some(json!(want.kind.as_str()))),
        ("/payload/raw/edit_version", Some(json!(want.edit_version))),
        ("/payload/raw/chat_title", Some(json!(want.chat.title))),
        ("/payload/raw/topic_id", Some(json!(want.topic_id))),
        ("/payload/raw/reply_to", Some(json!(want.reply_to))),
        (
            "/payload/raw/outgoing",
            Some(json!(sender.is_some_and(|s| s.is_self))),
        ),
        (
            "/payload/raw/media/file_name",
            want.media.as_ref().map(|m| json!(m.file_name)),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_policy_delivers_exactly_what_the_simulators_ground_truth_allows() {
    let upto = 400;
    let sim = SimulatorConfig {
        pii_rate: 0.3,
        ..simulation(3, upto, 400.0, 19)
    };
    let world = SimulatedWorld::new(sim.clone()).expect("world");
    let rules = Rules::pick(&world, upto);
    let t = truth(&world, upto, &rules);

    // The truth is what the simulator says, not what a hash map kept: no two events share an id,
    // and every rule and marker of the run has something to act on.
    let denied: u64 = t.denied.values().sum();
    assert_eq!(
        t.expected.len() as u64,
        t.generated as u64 - denied,
        "event ids collide in the ground truth"
    );
    for rule in [
        "telegram_service_chat",
        "drop_event_kinds:service",
        "drop_event_kinds:edit",
        "deny_chats",
        "deny_chat_kinds",
        "deny_senders",
    ] {
        assert!(
            t.denied.get(rule).is_some_and(|n| *n > 0),
            "{rule}: {:?}",
            t.denied
        );
    }
    for marker in [
        "email",
        "phone",
        "payment_card",
        "iban",
        "api_token",
        CUSTOM_NAME,
    ] {
        assert!(
            t.masked.get(marker).is_some_and(|n| *n > 0),
            "{marker}: {:?}",
            t.masked
        );
    }
    assert!(t.in_clear > 0, "the override's tokens stay as they are");
    assert!(t.override_edits > 0, "the override lets edits through");

    let mut rig = Rig::start(sim, |c| {
        c.policy = rules.policy();
        c.switchboard.send_sender_details = true;
    })
    .await;
    if !rig.wait_delivered(t.expected.keys(), WAIT).await {
        let delivered = rig.delivered();
        let mut missing: BTreeMap<String, usize> = BTreeMap::new();
        for e in t.expected.values() {
            if !delivered.contains_key(&e.event_id) {
                let what = format!("account {} {}", e.account_id, e.kind.as_str());
                *missing.entry(what).or_default() += 1;
            }
        }
        panic!(
            "expected events never arrived: {missing:?}; {:?}",
            rig.stats.snapshot()
        );
    }
    // Every denied event has reached the filter once the drop counters add up; only then is the
    // stored set final.
    let dropped = |rig: &Rig| rig.stats.snapshot().filtered.values().sum::<u64>();
    let deadline = std::time::Instant::now() + WAIT;
    while dropped(&rig) < denied && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        rig.stats.snapshot().filtered,
        t.denied,
        "drops by rule, as the filter counted them and as the ground truth has them"
    );

    let accepted = rig.fake.accepted();
    assert_eq!(rig.fake.stored_twice(), 0);
    assert_eq!(accepted.len(), t.expected.len(), "stored, against expected");
    let mut mismatches = Vec::new();
    for a in &accepted {
        let id = a.envelope["payload"]["raw"]["event_id"]
            .as_str()
            .unwrap_or_default();
        let Some(want) = t.expected.get(id) else {
            mismatches.push(format!("{id}: stored, but the rules deny it"));
            continue;
        };
        for (pointer, value) in want_fields(want) {
            let got = a.envelope.pointer(pointer);
            if got != value.as_ref() {
                mismatches.push(format!("{id} {pointer}: got {got:?}, want {value:?}"));
            }
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} of {} fields differ, e.g.:\n{}",
        mismatches.len(),
        accepted.len(),
        mismatches[..mismatches.len().min(10)].join("\n")
    );
    rig.stop().await;
}
