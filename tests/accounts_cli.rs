//! `tgingest accounts …` through the real binary against a running node, and the log canary:
//! with the node and the CLI logging at `trace`, no log line (nor any CLI output) contains a
//! session string or any 16-character window of it, an auth key (hex or base64), a phone number
//! in any format, a login code or a password.
//!
//! This test binary installs its own `trace` subscriber that captures every node log line.

mod accounts_support;
mod support;

use std::io::Write;
use std::process::{Output, Stdio};
use std::sync::{Arc, Mutex};

use accounts_support::*;
use base64::Engine;
use support::{TestNats, canary, tgingest_cmd};

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Capture {
    type Writer = Capture;
    fn make_writer(&'a self) -> Capture {
        self.clone()
    }
}

/// Runs the binary with `args`, feeding `stdin`; returns its output.
async fn cli(dir: &std::path::Path, args: Vec<String>, stdin: String) -> Output {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || {
        // The node's data dir: the CLI finds the node's generated admin token there by itself.
        let mut child = tgingest_cmd(&dir.join("data"))
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tgingest");
        let mut input = child.stdin.take().unwrap();
        input.write_all(stdin.as_bytes()).unwrap();
        drop(input);
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap()
}

fn args(base: &str, rest: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = ["--log-level", "trace", "accounts", "--admin-url", base]
        .iter()
        .map(|s| s.to_string())
        .collect();
    v.extend(rest.iter().map(|s| s.to_string()));
    v
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Whether `hay` contains `needle` not as part of a longer run of digits.
fn contains_number(hay: &str, needle: &str) -> bool {
    let bytes = hay.as_bytes();
    let mut from = 0;
    while let Some(pos) = hay[from..].find(needle) {
        let start = from + pos;
        let end = start + needle.len();
        let before = start > 0 && bytes[start - 1].is_ascii_digit();
        let after = end < bytes.len() && bytes[end].is_ascii_digit();
        if !before && !after {
            return true;
        }
        from = start + 1;
    }
    false
}

/// Every 16-character window of `s`.
fn windows(s: &str) -> Vec<String> {
    let chars: Vec<char> = s.chars().collect();
    chars.windows(16).map(|w| w.iter().collect()).collect()
}

/// The auth keys that must never show, in bytes.
fn secret_keys(sessions: &Sessions) -> Vec<Vec<u8>> {
    let mut keys: Vec<Vec<u8>> = vec![
        hex::decode(&sessions.pyrogram_key).unwrap(),
        hex::decode(&sessions.telethon_key).unwrap(),
        vec![0x5a; 256],
        vec![0xa5; 256],
    ];
    keys.dedup();
    keys
}

/// What must never show: 16-char windows of session strings and of the keys' encodings.
fn forbidden_windows(sessions: &Sessions) -> Vec<String> {
    let keys = secret_keys(sessions);
    let mut out = Vec::new();
    out.extend(windows(&sessions.pyrogram));
    out.extend(windows(&sessions.telethon));
    for key in keys {
        let hex_lower = hex::encode(&key);
        // 16 bytes of key = 32 hex characters.
        for w in hex_lower
            .as_bytes()
            .chunks(2)
            .collect::<Vec<_>>()
            .windows(16)
        {
            let s: String = w.iter().map(|c| std::str::from_utf8(c).unwrap()).collect();
            out.push(s.clone());
            out.push(s.to_uppercase());
        }
        for engine in [
            &base64::engine::general_purpose::STANDARD,
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        ] {
            out.extend(windows(&engine.encode(&key)));
        }
    }
    out.sort();
    out.dedup();
    out
}

fn check_canary(label: &str, log: &str, sessions: &Sessions) {
    // Decimal byte lists (how `#[derive(Debug)]` prints a key), over the whole text: `{:#?}`
    // spreads one over many lines.
    for key in secret_keys(sessions) {
        if let Some(window) = canary::decimal_list_in(log, &key) {
            panic!("{label}: key bytes as a decimal list ({window}) in the output");
        }
    }
    let forbidden = forbidden_windows(sessions);
    for line in log.lines() {
        for w in &forbidden {
            assert!(
                !line.contains(w.as_str()),
                "{label}: secret material in: {line}"
            );
        }
        let digits: String = line.chars().filter(char::is_ascii_digit).collect();
        for phone in [PHONE, PHONE_2FA] {
            let full: String = phone.chars().filter(char::is_ascii_digit).collect();
            assert!(!line.contains(phone), "{label}: phone in: {line}");
            assert!(!contains_number(line, &full), "{label}: phone in: {line}");
            assert!(!digits.contains(&full), "{label}: phone digits in: {line}");
            // The national number without the country code.
            let national = &full[2..];
            assert!(
                !contains_number(line, national),
                "{label}: phone in: {line}"
            );
        }
        assert!(
            !contains_number(line, CODE),
            "{label}: login code in: {line}"
        );
        for password in [PASSWORD, "wrong-password-1"] {
            assert!(!line.contains(password), "{label}: password in: {line}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_imports_from_stdin_lists_logs_in_and_nothing_secret_reaches_any_log_line() {
    tgingest::telemetry::install_crypto_provider();
    let capture = Capture::default();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("trace"))
        .with_writer(capture.clone())
        .with_ansi(false)
        .try_init()
        .expect("this test binary's subscriber");

    let sessions = sessions();
    let nats = TestNats::start();
    let dir = tempfile::tempdir().unwrap();
    let config = config(&nats.url(), dir.path());
    let mut cli_output = String::new();

    // No node yet: a clear error, exit 2.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let out = cli(dir.path(), args(&dead, &["list"]), String::new()).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("no tgingest node answers at {dead}"))
            && text(&out).contains("tgingest run"),
        "{}",
        text(&out)
    );

    let node = start_node(&config, &scripted()).await;
    let base = format!("http://{}", node.admin_addr().unwrap());

    // Import from stdin (Pyrogram) and from a file (Telethon, with the account id).
    let out = cli(
        dir.path(),
        args(
            &base,
            &["import", "--session-stdin", "--format", "pyrogram"],
        ),
        format!("{}\n", sessions.pyrogram),
    )
    .await;
    cli_output.push_str(&text(&out));
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("imported account {PYRO_USER}")),
        "{}",
        text(&out)
    );
    let file = dir.path().join("telethon.session");
    std::fs::write(&file, &sessions.telethon).unwrap();
    let out = cli(
        dir.path(),
        args(
            &base,
            &[
                "import",
                "--session-file",
                file.to_str().unwrap(),
                "--format",
                "telethon",
                "--account-id",
                TELETHON_USER,
            ],
        ),
        String::new(),
    )
    .await;
    cli_output.push_str(&text(&out));
    assert!(out.status.success(), "{}", text(&out));
    // A refused import exits 1 with the node's reason.
    let out = cli(
        dir.path(),
        args(
            &base,
            &["import", "--session-stdin", "--format", "telethon"],
        ),
        format!("{}\n", sessions.telethon),
    )
    .await;
    cli_output.push_str(&text(&out));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("account_id"), "{}", text(&out));
    // Usage errors exit 2.
    let out = cli(
        dir.path(),
        args(&base, &["import", "--session-stdin"]),
        String::new(),
    )
    .await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));

    // List, as JSON and as a table.
    let out = cli(dir.path(), args(&base, &["list", "--json"]), String::new()).await;
    cli_output.push_str(&text(&out));
    assert!(out.status.success(), "{}", text(&out));
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ids: Vec<&str> = list["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["account_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [PYRO_USER, TELETHON_USER]);
    assert!(
        list["accounts"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["lifecycle"]["state"] == "pending_consent")
    );
    let out = cli(dir.path(), args(&base, &["list"]), String::new()).await;
    let table = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        table.contains("ACCOUNT") && table.contains("pending_consent"),
        "{table}"
    );

    // Log in with 2FA: a wrong code, the right one, a wrong password, the right one (from stdin,
    // since it is not a terminal).
    let out = cli(
        dir.path(),
        args(&base, &["add", "--phone", PHONE_2FA]),
        format!("00000\n{CODE}\nwrong-password-1\n{PASSWORD}\n"),
    )
    .await;
    cli_output.push_str(&text(&out));
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains(HINT), "hint not shown: {}", text(&out));
    assert!(
        text(&out).contains(&format!("logged in as account {LOGIN_2FA_USER}")),
        "{}",
        text(&out)
    );
    // And without 2FA.
    let out = cli(
        dir.path(),
        args(&base, &["add", "--phone", PHONE]),
        format!("{CODE}\n"),
    )
    .await;
    cli_output.push_str(&text(&out));
    assert!(out.status.success(), "{}", text(&out));

    // Consent, pause, resume, remove.
    let out = cli(
        dir.path(),
        args(
            &base,
            &[
                "consent",
                PYRO_USER,
                "--by",
                "Jane Owner",
                "--scope",
                "all chats",
            ],
        ),
        String::new(),
    )
    .await;
    assert!(out.status.success(), "{}", text(&out));
    for cmd in ["pause", "resume"] {
        let out = cli(dir.path(), args(&base, &[cmd, PYRO_USER]), String::new()).await;
        assert!(out.status.success(), "{cmd}: {}", text(&out));
    }
    let out = cli(
        dir.path(),
        args(&base, &["remove", PYRO_USER]),
        String::new(),
    )
    .await;
    assert_eq!(
        out.status.code(),
        Some(2),
        "remove without --yes: {}",
        text(&out)
    );
    let out = cli(
        dir.path(),
        args(&base, &["remove", PYRO_USER, "--yes"]),
        String::new(),
    )
    .await;
    assert!(out.status.success(), "{}", text(&out));
    let out = cli(
        dir.path(),
        args(&base, &["pause", PYRO_USER]),
        String::new(),
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));

    node.shutdown().await.unwrap();

    let node_log = String::from_utf8_lossy(&capture.0.lock().unwrap()).to_string();
    assert!(
        node_log.contains("account imported") && node_log.contains("login succeeded"),
        "the capture did not see the node's log"
    );
    assert!(node_log.contains("TRACE"), "not logging at trace");
    assert!(
        cli_output.contains("TRACE") || cli_output.contains("DEBUG"),
        "the CLI did not log at trace: {cli_output}"
    );
    // The canary itself catches what it must.
    let probes = [
        format!("x {} y", &sessions.pyrogram[10..30]),
        format!("x {} y", &sessions.telethon[40..60]),
        format!("key={}", &sessions.pyrogram_key[64..100]),
        format!("key={}", sessions.telethon_key[0..40].to_uppercase()),
        "phone=4915123456789".to_string(),
        "phone=+44 7700 900123".to_string(),
        "to 15123456789 now".to_string(),
        format!("code {CODE} sent"),
        format!("password={PASSWORD}"),
        format!("key: {:?}", &secret_keys(&sessions)[0][100..120]),
        format!("Key {{ bytes: {:#?} }}", &secret_keys(&sessions)[1][0..12]),
        format!("{:?}", [0xa5u8; 16]),
    ];
    for probe in probes {
        let caught = std::panic::catch_unwind(|| check_canary("probe", &probe, &sessions)).is_err();
        assert!(caught, "the canary misses: {probe}");
    }
    check_canary("node log", &node_log, &sessions);
    check_canary("CLI output", &cli_output, &sessions);
}
