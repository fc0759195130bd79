//! `tgingest policy test` through the real binary: an operator tries a policy before deploying it.

mod support;

use std::io::Write;
use std::process::Stdio;

fn policy_test(
    config: Option<&std::path::Path>,
    input: &str,
) -> (Option<i32>, Vec<serde_json::Value>, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = support::tgingest_cmd(dir.path());
    if let Some(c) = config {
        cmd.arg("--config").arg(c);
    }
    let mut child = cmd
        .args(["policy", "test", "--json", "--account", "42"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let lines = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    (
        out.status.code(),
        lines,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn texts_are_redacted_and_reported_one_json_line_each() {
    let (code, lines, stderr) = policy_test(
        None,
        "write to anna@example.org\nnothing to hide here\ncard 4111 1111 1111 1111\n",
    );
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0]["decision"], "kept");
    assert!(
        lines[0]["text"]
            .as_str()
            .unwrap()
            .contains("[REDACTED:email]"),
        "{}",
        lines[0]
    );
    assert!(!lines[0].to_string().contains("anna@example.org"));
    assert_eq!(lines[1]["text"], "nothing to hide here");
    assert!(
        lines[2]["text"]
            .as_str()
            .unwrap()
            .contains("[REDACTED:payment_card]"),
        "{}",
        lines[2]
    );
    assert!(
        stderr.contains("3 lines: 3 kept, 0 dropped, 0 unreadable"),
        "{stderr}"
    );
}

#[test]
fn a_deny_rule_from_the_config_drops_and_names_the_rule_and_bad_lines_fail_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("policy.toml");
    std::fs::write(&config, "[policy]\ndeny_chat_kinds = [\"private\"]\n").unwrap();
    let (code, lines, stderr) = policy_test(Some(&config), "hello\n{not json\n");
    assert_eq!(
        code,
        Some(1),
        "an unreadable line must make the run fail: {stderr}"
    );
    assert_eq!(lines[0]["decision"], "dropped");
    assert!(
        lines[0]["rule"]
            .as_str()
            .unwrap()
            .contains("deny_chat_kinds"),
        "{}",
        lines[0]
    );
    assert_eq!(lines[1]["line"], 2);
    assert_eq!(lines[1]["decision"], "error");
    assert!(
        lines[1]["error"]
            .as_str()
            .unwrap()
            .contains("not a valid event"),
        "{}",
        lines[1]
    );
}

#[test]
fn text_objects_are_samples_and_their_ids_are_echoed() {
    let (code, lines, stderr) = policy_test(
        None,
        concat!(
            "{\"id\": \"a1\", \"text\": \"write to anna@example.org\"}\n",
            "{\"text\": \"nothing to hide\"}\n",
            "{\"id\": 7, \"text\": \"card 4111111111111111\", \"label\": \"pii\"}\n",
            "{\"id\": \"a4\", \"body\": \"no text field\"}\n",
        ),
    );
    assert_eq!(code, Some(1), "the last line has no text: {stderr}");
    assert_eq!(lines.len(), 4);
    assert_eq!(
        lines[0],
        serde_json::json!({"line": 1, "id": "a1", "decision": "kept", "rule": null,
            "redactions": {"email": 1}, "text": "write to [REDACTED:email]"})
    );
    assert_eq!(lines[1]["text"], "nothing to hide");
    assert!(lines[1].get("id").is_none(), "{}", lines[1]);
    assert_eq!(lines[2]["id"], "7");
    assert_eq!(lines[2]["text"], "card [REDACTED:payment_card]");
    assert_eq!(lines[2]["warning"], "fields not read: label");
    assert_eq!(lines[3]["id"], "a4");
    assert_eq!(lines[3]["decision"], "error");
    assert!(
        lines[3]["error"].as_str().unwrap().contains("\"text\""),
        "{}",
        lines[3]
    );
    assert!(
        stderr.contains("4 lines: 3 kept, 0 dropped, 1 unreadable"),
        "{stderr}"
    );
}

#[test]
fn a_hand_written_event_without_a_valid_event_id_is_tested_with_a_warning() {
    let event = |event_id: Option<&str>| {
        let mut e = serde_json::json!({
            "schema_version": 1, "account_id": "42", "kind": "message",
            "chat": {"kind": "group", "id": "-7", "title": null},
            "sender": {"id": "5", "display_name": null, "is_self": false},
            "message_id": "3", "topic_id": null, "reply_to": null, "sent_at_us": 0,
            "edit_version": 0, "text": "mail bob@example.com", "media": null,
            "source": "live", "observed_at_us": 0,
        });
        if let Some(id) = event_id {
            e["event_id"] = id.into();
        }
        format!("{e}\n")
    };
    let input = event(Some("made-up")) + &event(None);
    let (code, lines, stderr) = policy_test(None, &input);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(lines.len(), 2);
    for line in &lines {
        assert_eq!(line["decision"], "kept", "{line}");
        assert_eq!(line["text"], "mail [REDACTED:email]", "{line}");
    }
    let warning = |i: usize| lines[i]["warning"].as_str().unwrap_or_default().to_string();
    assert!(
        warning(0).contains("event_id \"made-up\" does not match its fields"),
        "{}",
        lines[0]
    );
    assert!(warning(1).contains("has no event_id"), "{}", lines[1]);
}
