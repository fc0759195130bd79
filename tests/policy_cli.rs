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
