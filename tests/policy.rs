//! Scope rules, their precedence, config validation and `policy test`, through the public API.

use std::collections::BTreeMap;

use tgingest::config::ConfigError;
use tgingest::event::{
    Chat, ChatKind, Event, EventKind, SCHEMA_VERSION, Sender, Source, event_id, marked_chat_id,
};
use tgingest::policy::{
    AccountPolicyConfig, CustomDetectorConfig, Decision, DetectorKind, DropRule, Policy,
    PolicyConfig, run_policy_test,
};

const ACCOUNT: &str = "42";
const OTHER_ACCOUNT: &str = "43";

fn event(account: &str, kind: ChatKind, bare_chat: i64, sender: Option<&str>, text: &str) -> Event {
    let chat = marked_chat_id(kind, bare_chat);
    Event {
        schema_version: SCHEMA_VERSION,
        event_id: event_id(account, &chat, "7", EventKind::Message, 0),
        account_id: account.into(),
        kind: EventKind::Message,
        chat: Chat {
            kind,
            id: chat,
            title: None,
        },
        sender: sender.map(|id| Sender {
            id: id.into(),
            display_name: None,
            is_self: false,
        }),
        message_id: "7".into(),
        topic_id: None,
        reply_to: None,
        sent_at_us: 1_700_000_000_000_000,
        edit_version: 0,
        text: text.into(),
        media: None,
        source: Source::Live,
        observed_at_us: 1_700_000_000_000_001,
    }
}

fn group_msg(account: &str, bare_chat: i64) -> Event {
    event(account, ChatKind::Supergroup, bare_chat, Some("99"), "hi")
}

fn with_kind(mut e: Event, kind: EventKind) -> Event {
    e.kind = kind;
    e.event_id = e.expected_id();
    e
}

fn policy(config: PolicyConfig) -> Policy {
    Policy::new(&config).expect("valid policy")
}

fn verdict(p: &Policy, e: &Event) -> Result<(), DropRule> {
    match p.decide(e) {
        Decision::Keep { .. } => Ok(()),
        Decision::Drop { rule } => Err(rule),
    }
}

fn chat(bare: i64) -> String {
    marked_chat_id(ChatKind::Supergroup, bare)
}

// ---------------------------------------------------------------------------------------------
// Precedence
// ---------------------------------------------------------------------------------------------

#[test]
fn an_account_override_replaces_the_global_value_for_that_account_only() {
    let mut config = PolicyConfig {
        deny_chats: vec![chat(1)],
        ..PolicyConfig::default()
    };
    config.accounts.insert(
        ACCOUNT.into(),
        AccountPolicyConfig {
            deny_chats: Some(vec![chat(2)]),
            ..AccountPolicyConfig::default()
        },
    );
    let p = policy(config);
    // The overriding account: chat 1 passes, chat 2 is denied.
    assert_eq!(verdict(&p, &group_msg(ACCOUNT, 1)), Ok(()));
    assert_eq!(
        verdict(&p, &group_msg(ACCOUNT, 2)),
        Err(DropRule::DenyChats)
    );
    // Any other account: the global list.
    assert_eq!(
        verdict(&p, &group_msg(OTHER_ACCOUNT, 1)),
        Err(DropRule::DenyChats)
    );
    assert_eq!(verdict(&p, &group_msg(OTHER_ACCOUNT, 2)), Ok(()));
}

#[test]
fn an_empty_override_list_clears_the_global_list_for_that_account() {
    let mut config = PolicyConfig {
        allow_chats: vec![chat(1)],
        ..PolicyConfig::default()
    };
    config.accounts.insert(
        ACCOUNT.into(),
        AccountPolicyConfig {
            allow_chats: Some(Vec::new()),
            ..AccountPolicyConfig::default()
        },
    );
    let p = policy(config);
    assert_eq!(verdict(&p, &group_msg(ACCOUNT, 5)), Ok(()));
    assert_eq!(
        verdict(&p, &group_msg(OTHER_ACCOUNT, 5)),
        Err(DropRule::AllowChats)
    );
}

#[test]
fn deny_beats_allow_for_ids_and_for_kinds() {
    let p = policy(PolicyConfig {
        allow_chats: vec![chat(1), chat(2)],
        deny_chats: vec![chat(1)],
        ..PolicyConfig::default()
    });
    assert_eq!(
        verdict(&p, &group_msg(ACCOUNT, 1)),
        Err(DropRule::DenyChats)
    );
    assert_eq!(verdict(&p, &group_msg(ACCOUNT, 2)), Ok(()));
    assert_eq!(
        verdict(&p, &group_msg(ACCOUNT, 3)),
        Err(DropRule::AllowChats)
    );

    let p = policy(PolicyConfig {
        allow_chats: vec![chat(1)],
        deny_chat_kinds: vec![ChatKind::Supergroup],
        ..PolicyConfig::default()
    });
    assert_eq!(
        verdict(&p, &group_msg(ACCOUNT, 1)),
        Err(DropRule::DenyChatKinds)
    );

    let p = policy(PolicyConfig {
        allow_senders: vec!["99".into()],
        deny_senders: vec!["99".into()],
        ..PolicyConfig::default()
    });
    assert_eq!(
        verdict(&p, &group_msg(ACCOUNT, 1)),
        Err(DropRule::DenySenders)
    );
}

// ---------------------------------------------------------------------------------------------
// Telegram's service chat
// ---------------------------------------------------------------------------------------------

fn login_code_message(account: &str) -> Event {
    event(
        account,
        ChatKind::Private,
        777_000,
        Some("777000"),
        "Login code: 12345. Do not give this code to anyone",
    )
}

#[test]
fn the_telegram_service_chat_is_denied_by_default_even_when_allowed_by_id() {
    let p = policy(PolicyConfig::default());
    assert_eq!(
        verdict(&p, &login_code_message(ACCOUNT)),
        Err(DropRule::TelegramServiceChat)
    );
    let p = policy(PolicyConfig {
        allow_chats: vec!["777000".into()],
        ..PolicyConfig::default()
    });
    assert_eq!(
        verdict(&p, &login_code_message(ACCOUNT)),
        Err(DropRule::TelegramServiceChat)
    );
}

#[test]
fn the_telegram_service_chat_passes_when_configured_and_its_code_is_still_masked() {
    let p = policy(PolicyConfig {
        allow_telegram_service_chat: true,
        ..PolicyConfig::default()
    });
    let Decision::Keep { event, redactions } = p.decide(&login_code_message(ACCOUNT)) else {
        panic!("777000 dropped although allowed");
    };
    assert!(!event.text.contains("12345"), "{}", event.text);
    assert_eq!(redactions[0].0.name(), "login_code");

    // Per account, too.
    let mut config = PolicyConfig::default();
    config.accounts.insert(
        ACCOUNT.into(),
        AccountPolicyConfig {
            allow_telegram_service_chat: Some(true),
            ..AccountPolicyConfig::default()
        },
    );
    let p = policy(config);
    assert_eq!(verdict(&p, &login_code_message(ACCOUNT)), Ok(()));
    assert_eq!(
        verdict(&p, &login_code_message(OTHER_ACCOUNT)),
        Err(DropRule::TelegramServiceChat)
    );
}

// ---------------------------------------------------------------------------------------------
// Kinds and senders
// ---------------------------------------------------------------------------------------------

#[test]
fn chat_kind_lists_filter_by_kind() {
    let private = event(ACCOUNT, ChatKind::Private, 5, Some("5"), "hi");
    let channel = event(ACCOUNT, ChatKind::Channel, 6, None, "post");
    let group = event(ACCOUNT, ChatKind::Group, 7, Some("5"), "hi");

    let p = policy(PolicyConfig {
        allow_chat_kinds: vec![ChatKind::Private, ChatKind::Group],
        ..PolicyConfig::default()
    });
    assert_eq!(verdict(&p, &private), Ok(()));
    assert_eq!(verdict(&p, &group), Ok(()));
    assert_eq!(verdict(&p, &channel), Err(DropRule::AllowChatKinds));

    let p = policy(PolicyConfig {
        deny_chat_kinds: vec![ChatKind::Channel],
        ..PolicyConfig::default()
    });
    assert_eq!(verdict(&p, &private), Ok(()));
    assert_eq!(verdict(&p, &channel), Err(DropRule::DenyChatKinds));
}

#[test]
fn sender_lists_filter_by_sender_and_unsigned_posts_fail_an_allow_list() {
    let p = policy(PolicyConfig {
        deny_senders: vec!["13".into()],
        ..PolicyConfig::default()
    });
    let from = |id: &str| event(ACCOUNT, ChatKind::Group, 7, Some(id), "hi");
    assert_eq!(verdict(&p, &from("13")), Err(DropRule::DenySenders));
    assert_eq!(verdict(&p, &from("14")), Ok(()));

    let p = policy(PolicyConfig {
        allow_senders: vec!["14".into()],
        ..PolicyConfig::default()
    });
    assert_eq!(verdict(&p, &from("14")), Ok(()));
    assert_eq!(verdict(&p, &from("15")), Err(DropRule::AllowSenders));
    let unsigned = event(ACCOUNT, ChatKind::Channel, 6, None, "post");
    assert_eq!(verdict(&p, &unsigned), Err(DropRule::AllowSenders));
}

#[test]
fn service_messages_are_dropped_by_default_and_kept_when_not_listed() {
    let service = with_kind(group_msg(ACCOUNT, 1), EventKind::Service);
    let p = policy(PolicyConfig::default());
    assert_eq!(
        verdict(&p, &service),
        Err(DropRule::DropEventKind(EventKind::Service))
    );
    assert_eq!(
        DropRule::DropEventKind(EventKind::Service).as_str(),
        "drop_event_kinds:service"
    );
    let p = policy(PolicyConfig {
        drop_event_kinds: Vec::new(),
        ..PolicyConfig::default()
    });
    assert_eq!(verdict(&p, &service), Ok(()));
    let p = policy(PolicyConfig {
        drop_event_kinds: vec![EventKind::Edit],
        ..PolicyConfig::default()
    });
    let edit = with_kind(group_msg(ACCOUNT, 1), EventKind::Edit);
    assert_eq!(
        verdict(&p, &edit),
        Err(DropRule::DropEventKind(EventKind::Edit))
    );
}

#[test]
fn deletions_pass_the_scope_filter_like_messages_but_ignore_sender_rules() {
    let mut delete = with_kind(group_msg(ACCOUNT, 1), EventKind::Delete);
    delete.text.clear();
    delete.sender = None;
    let p = policy(PolicyConfig {
        allow_chats: vec![chat(1)],
        allow_senders: vec!["14".into()],
        ..PolicyConfig::default()
    });
    let Decision::Keep { event, redactions } = p.decide(&delete) else {
        panic!("deletion dropped");
    };
    assert_eq!(event, delete);
    assert!(redactions.is_empty());

    let p = policy(PolicyConfig {
        deny_chats: vec![chat(1)],
        ..PolicyConfig::default()
    });
    assert_eq!(verdict(&p, &delete), Err(DropRule::DenyChats));
}

#[test]
fn an_account_can_override_its_redaction_detectors_and_custom_patterns() {
    let mut config = PolicyConfig::default();
    config.accounts.insert(
        ACCOUNT.into(),
        AccountPolicyConfig {
            redaction: tgingest::policy::AccountRedactionConfig {
                detectors: Some(vec![DetectorKind::Phone]),
                custom: Some(vec![CustomDetectorConfig {
                    name: "ticket".into(),
                    pattern: "TCK-[0-9]{4}".into(),
                }]),
                ..Default::default()
            },
            ..AccountPolicyConfig::default()
        },
    );
    let p = policy(config);
    let text = "mail a@example.com, call +44 20 7946 0958, TCK-1234";
    let kept = |account: &str| match p.decide(&group_msg_text(account, text)) {
        Decision::Keep { event, .. } => event.text,
        Decision::Drop { rule } => panic!("dropped by {rule}"),
    };
    assert_eq!(
        kept(ACCOUNT),
        "mail a@example.com, call [REDACTED:phone], [REDACTED:ticket]"
    );
    assert_eq!(
        kept(OTHER_ACCOUNT),
        "mail [REDACTED:email], call [REDACTED:phone], TCK-1234"
    );
}

fn group_msg_text(account: &str, text: &str) -> Event {
    event(account, ChatKind::Supergroup, 1, Some("99"), text)
}

// ---------------------------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------------------------

fn invalid_key(config: &PolicyConfig) -> (String, String, String) {
    match config.validate() {
        Err(ConfigError::Invalid {
            key,
            value,
            allowed,
            ..
        }) => {
            // Policy::new refuses the same config with the same error.
            assert!(Policy::new(config).is_err());
            (key, value, allowed)
        }
        other => panic!("expected an Invalid error, got {other:?}"),
    }
}

#[test]
fn validation_names_the_key_and_index_of_a_bad_marked_id() {
    for bad in ["0", "+5", "-0", "007", " 5", "abc", "99999999999999999999"] {
        let config = PolicyConfig {
            deny_chats: vec![chat(1), chat(2), bad.into()],
            ..PolicyConfig::default()
        };
        let (key, value, allowed) = invalid_key(&config);
        assert_eq!(key, "policy.deny_chats[2]", "{bad:?}");
        assert_eq!(value, format!("{bad:?}"));
        assert!(allowed.contains("marked chat id"), "{allowed}");
    }
    let config = PolicyConfig {
        allow_senders: vec!["x1".into()],
        ..PolicyConfig::default()
    };
    assert_eq!(invalid_key(&config).0, "policy.allow_senders[0]");
}

#[test]
fn validation_names_account_keys_with_their_account() {
    let mut config = PolicyConfig::default();
    config.accounts.insert(
        "42".into(),
        AccountPolicyConfig {
            allow_chats: Some(vec!["-100".into(), "1-2".into()]),
            ..AccountPolicyConfig::default()
        },
    );
    assert_eq!(invalid_key(&config).0, "policy.accounts.42.allow_chats[1]");

    let mut config = PolicyConfig::default();
    config
        .accounts
        .insert("@alice".into(), AccountPolicyConfig::default());
    let (key, value, _) = invalid_key(&config);
    assert_eq!(
        (key.as_str(), value.as_str()),
        ("policy.accounts", "\"@alice\"")
    );
}

#[test]
fn validation_names_the_regex_error_of_a_custom_pattern() {
    let mut config = PolicyConfig::default();
    config.redaction.custom = vec![
        CustomDetectorConfig {
            name: "ok".into(),
            pattern: "OK-[0-9]+".into(),
        },
        CustomDetectorConfig {
            name: "broken".into(),
            pattern: "EMP-([0-9]{6}".into(),
        },
    ];
    let (key, value, allowed) = invalid_key(&config);
    assert_eq!(key, "policy.redaction.custom[1].pattern");
    assert_eq!(value, "\"EMP-([0-9]{6}\"");
    assert!(
        allowed.contains("does not compile") && allowed.contains("unclosed group"),
        "{allowed}"
    );
}

#[test]
fn validation_refuses_duplicate_builtin_malformed_and_empty_matching_custom_detectors() {
    let custom = |pairs: &[(&str, &str)]| PolicyConfig {
        redaction: tgingest::policy::RedactionConfig {
            custom: pairs
                .iter()
                .map(|(n, p)| CustomDetectorConfig {
                    name: (*n).into(),
                    pattern: (*p).into(),
                })
                .collect(),
            ..Default::default()
        },
        ..PolicyConfig::default()
    };
    let (key, _, allowed) = invalid_key(&custom(&[("emp", "E[0-9]"), ("emp", "F[0-9]")]));
    assert_eq!(key, "policy.redaction.custom[1].name");
    assert!(allowed.contains("not used by another"), "{allowed}");

    let (key, _, allowed) = invalid_key(&custom(&[("email", "x@y")]));
    assert_eq!(key, "policy.redaction.custom[0].name");
    assert!(allowed.contains("built-in"), "{allowed}");

    let (key, _, _) = invalid_key(&custom(&[("Has Space", "x")]));
    assert_eq!(key, "policy.redaction.custom[0].name");

    let (key, _, allowed) = invalid_key(&custom(&[("anything", "[0-9]*")]));
    assert_eq!(key, "policy.redaction.custom[0].pattern");
    assert!(allowed.contains("empty"), "{allowed}");
}

/// Parses `[policy]` TOML the way the config loader does and returns the error path.
fn parse_error_path(toml_text: &str) -> (String, String) {
    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Root {
        policy: PolicyConfig,
    }
    let value: toml::Value = toml::from_str(toml_text).expect("toml");
    let err = serde_path_to_error::deserialize::<_, Root>(value).expect_err("should fail");
    (err.path().to_string(), err.into_inner().to_string())
}

#[test]
fn unknown_kinds_and_detectors_are_refused_while_reading_with_their_key() {
    let (path, message) =
        parse_error_path("[policy]\ndeny_chat_kinds = [\"channel\", \"chanel\"]\n");
    assert_eq!(path, "policy.deny_chat_kinds[1]");
    assert!(
        message.contains("chanel") && message.contains("supergroup"),
        "{message}"
    );

    let (path, message) = parse_error_path("[policy]\ndrop_event_kinds = [\"reaction\"]\n");
    assert_eq!(path, "policy.drop_event_kinds[0]");
    assert!(message.contains("service"), "{message}");

    let (path, message) =
        parse_error_path("[policy.redaction]\ndetectors = [\"email\", \"ssn\"]\n");
    assert_eq!(path, "policy.redaction.detectors[1]");
    assert!(message.contains("payment_card"), "{message}");

    let (path, _) = parse_error_path("[policy.accounts.42]\ndeny_chatz = []\n");
    assert_eq!(path, "policy.accounts.42.deny_chatz");
}

#[test]
fn the_documented_example_parses_and_the_defaults_round_trip_through_toml() {
    let text = r#"
        allow_chats = []
        deny_chats = ["-1001234567890"]
        allow_chat_kinds = []
        deny_chat_kinds = ["channel"]
        allow_senders = []
        deny_senders = ["13"]
        drop_event_kinds = ["service"]
        allow_telegram_service_chat = false
        [redaction]
        detectors = ["email","phone","payment_card","iban","login_code","api_token","session_string"]
        custom = [ { name = "employee_id", pattern = "EMP-[0-9]{6}" } ]
        [accounts."42"]
        deny_chats = []
        [accounts."42".redaction]
        detectors = ["phone"]
    "#;
    let config: PolicyConfig = toml::from_str(text).expect("example parses");
    config.validate().expect("example validates");
    Policy::new(&config).expect("example compiles");
    assert_eq!(config.accounts["42"].deny_chats, Some(Vec::new()));

    for c in [PolicyConfig::default(), config] {
        let printed = toml::to_string_pretty(&c).expect("prints");
        let back: PolicyConfig = toml::from_str(&printed).expect("reads back");
        assert_eq!(back, c, "{printed}");
    }
    assert_eq!(
        PolicyConfig::default().redaction.detectors,
        DetectorKind::ALL.to_vec()
    );
}

// ---------------------------------------------------------------------------------------------
// policy test
// ---------------------------------------------------------------------------------------------

fn mixed_input() -> Vec<u8> {
    let kept = event(
        ACCOUNT,
        ChatKind::Group,
        7,
        Some("5"),
        "card 4111 1111 1111 1111",
    );
    let service = login_code_message(ACCOUNT);
    let mut bad_id = kept.clone();
    bad_id.event_id = "0".repeat(32);
    let mut lines = [
        "write to bob@example.com or +1 (555) 123-4567".to_string(),
        serde_json::to_string(&kept).unwrap(),
        String::new(),
        serde_json::to_string(&service).unwrap(),
        "{\"schema_version\": 1, \"event_id\": ".to_string(),
        serde_json::to_string(&bad_id).unwrap(),
        "nothing secret here".to_string(),
    ]
    .join("\n")
    .into_bytes();
    lines.extend_from_slice(b"\n\xff\xfe broken bytes\nlast line\n");
    lines
}

#[test]
fn policy_test_reports_every_line_and_goes_on_after_broken_ones() {
    let p = policy(PolicyConfig::default());
    let mut out = Vec::new();
    let summary = run_policy_test(&p, mixed_input().as_slice(), &mut out, false, ACCOUNT).unwrap();
    let out = String::from_utf8(out).unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        [
            "line 1: kept (email=1, phone=1): write to [REDACTED:email] or [REDACTED:phone]",
            "line 2: kept (payment_card=1): card [REDACTED:payment_card]",
            "line 4: dropped by rule telegram_service_chat",
            lines[3],
            "line 6: kept (payment_card=1): card [REDACTED:payment_card]",
            lines[5],
            "line 7: kept: nothing secret here",
            lines[7],
            "line 9: kept: last line",
        ],
        "{out}"
    );
    assert!(
        lines[3].starts_with("line 5: error: not a valid event as JSON: "),
        "{out}"
    );
    // A dry run tests an event whose event_id is wrong, and says so.
    assert!(
        lines[5].starts_with("line 6: warning: event_id \"000")
            && lines[5].contains("does not match its fields (expected")
            && lines[5].ends_with("; tested anyway"),
        "{out}"
    );
    assert!(
        lines[7].starts_with("line 8: error: not UTF-8 text"),
        "{out}"
    );
    assert_eq!(
        (summary.lines, summary.kept, summary.dropped, summary.errors),
        (8, 5, 1, 2)
    );
    assert_eq!(
        summary.redactions,
        BTreeMap::from([
            ("email".to_string(), 1),
            ("payment_card".to_string(), 2),
            ("phone".to_string(), 1)
        ])
    );
}

#[test]
fn policy_test_json_prints_one_object_per_line() {
    let p = policy(PolicyConfig::default());
    let mut out = Vec::new();
    run_policy_test(&p, mixed_input().as_slice(), &mut out, true, ACCOUNT).unwrap();
    let objects: Vec<serde_json::Value> = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect();
    assert_eq!(objects.len(), 8);
    assert_eq!(
        objects[0],
        serde_json::json!({
            "line": 1, "decision": "kept", "rule": null,
            "redactions": {"email": 1, "phone": 1},
            "text": "write to [REDACTED:email] or [REDACTED:phone]"
        })
    );
    assert_eq!(
        objects[2],
        serde_json::json!({
            "line": 4, "decision": "dropped", "rule": "telegram_service_chat",
            "redactions": {}, "text": null
        })
    );
    assert_eq!(objects[3]["line"], 5);
    assert_eq!(objects[3]["decision"], "error");
    assert!(
        objects[3]["error"]
            .as_str()
            .unwrap()
            .contains("not a valid event as JSON")
    );
}

#[test]
fn policy_test_plain_lines_are_messages_in_the_accounts_saved_messages() {
    // An allow list without the account's own chat drops plain lines: they obey the policy.
    let p = policy(PolicyConfig {
        allow_chats: vec![chat(1)],
        ..PolicyConfig::default()
    });
    let mut out = Vec::new();
    let s = run_policy_test(&p, &b"hello\n"[..], &mut out, false, ACCOUNT).unwrap();
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "line 1: dropped by rule allow_chats\n"
    );
    assert_eq!(s.dropped, 1);
    let p = policy(PolicyConfig {
        allow_chats: vec![ACCOUNT.into()],
        ..PolicyConfig::default()
    });
    let s = run_policy_test(&p, &b"hello\n"[..], std::io::sink(), false, ACCOUNT).unwrap();
    assert_eq!(s.kept, 1);
}

#[test]
fn validation_refuses_an_unknown_phone_region_naming_the_key_and_index() {
    let mut config = PolicyConfig::default();
    config.redaction.phone_regions = vec!["DE".into(), "XX".into()];
    let (key, value, allowed) = invalid_key(&config);
    assert_eq!(key, "policy.redaction.phone_regions[1]");
    assert_eq!(value, "\"XX\"");
    assert!(allowed.contains("ISO 3166"), "{allowed}");

    let mut lower = PolicyConfig::default();
    lower.accounts.insert(
        ACCOUNT.into(),
        AccountPolicyConfig {
            redaction: tgingest::policy::AccountRedactionConfig {
                phone_regions: Some(vec!["de".into()]),
                ..Default::default()
            },
            ..AccountPolicyConfig::default()
        },
    );
    let (key, _, _) = invalid_key(&lower);
    assert_eq!(
        key,
        format!("policy.accounts.{ACCOUNT}.redaction.phone_regions[0]")
    );
}

#[test]
fn national_numbers_count_only_for_the_configured_phone_regions() {
    // A Spanish landline written the Spanish way, no phone word near it.
    let text = "Barcelona 93 038 84 51, pregunta por Jordi";
    let mut spain = PolicyConfig::default();
    spain.redaction.phone_regions = vec!["ES".into()];
    let mut japan = PolicyConfig::default();
    japan.redaction.phone_regions = vec!["JP".into()];
    let masked = |config: &PolicyConfig| {
        let p = Policy::new(config).expect("valid policy");
        p.redactor(ACCOUNT).find(text).len()
    };
    assert_eq!(masked(&spain), 1);
    assert_eq!(masked(&japan), 0);
}
