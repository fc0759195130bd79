//! What must stay out of the logs, looked for in a real run: the binary runs the fake-DC demo
//! (grammers clients against the fake Telegram DC, the whole pipeline, the fake Switchboard) at
//! `RUST_LOG=trace` with JSON log lines, and the log is searched for
//! - every text the demo sent ("demo message N"): without `logging.bodies` none may appear; with
//!   it they appear, and only in `debug` or `trace` lines (which also shows that the canary sees
//!   a text when one is logged);
//! - every account's auth key (hex either case, base64 standard or URL-safe, padded or not, a
//!   Rust `Debug` byte list) and every 16-byte window of it in those encodings;
//! - every account's Telethon session string (what the demo imports) and every 24-character
//!   window of it;
//! - every account's phone number (the fake DC gives each one, in the `user` objects the clients
//!   receive), E.164 and digits only.
//!
//! The test knows these values without asking the run: it sets [`FAKE_DC_SEED_ENV`] and derives
//! keys and phones with the functions the demo uses; the session string needs only the fake DC's
//! address, from its `listening` line. There is no login code to look for: the demo imports
//! session strings (the fake DC answers no `auth.sendCode`), and the run is checked to have sent
//! no `auth.*` request.

mod support;

use aho_corasick::AhoCorasick;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use serde_json::Value;
use support::tgingest_cmd;
use tgingest::demo::{
    FAKE_DC_SEED_ENV, fake_dc_account_key, fake_dc_account_phone, telethon_session_string,
};

/// What every message the fake-DC demo sends starts with.
const SENT_TEXT: &str = "demo message ";

/// The seed of the demo's account secrets (any fixed value: the test derives them from it).
const SEED: u64 = 0x5eed_c0de_1616;

/// Accounts the demo runs with.
const ACCOUNTS: usize = 2;

/// Runs a short fake-DC demo at `RUST_LOG=trace` with JSON log lines; returns the summary and
/// the log lines, parsed.
fn demo_at_trace(bodies: bool) -> (Value, Vec<Value>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut cmd = tgingest_cmd(dir.path());
    cmd.env("RUST_LOG", "trace")
        .env(FAKE_DC_SEED_ENV, SEED.to_string())
        .env("TGINGEST_LOGGING_BODIES", bodies.to_string())
        .args([
            "--log-format",
            "json",
            "demo",
            "--json",
            "--source",
            "fake-dc",
        ])
        .args(["--accounts", &ACCOUNTS.to_string()])
        .args(["--rate", "2", "--duration", "2s"])
        .arg("--data-dir")
        .arg(dir.path());
    let out = cmd.output().expect("run tgingest demo");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let summary: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("no JSON summary ({e}); stderr tail:\n{}", tail(&stderr)));
    assert_eq!(out.status.code(), Some(0), "{summary}\n{}", tail(&stderr));
    let lines = stderr
        .lines()
        .map(|line| {
            serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"))
        })
        .collect();
    (summary, lines)
}

fn tail(text: &str) -> &str {
    &text[text.len().saturating_sub(4000)..]
}

/// The log lines that show any text the demo sent.
fn with_sent_text(lines: &[Value]) -> Vec<&Value> {
    lines
        .iter()
        .filter(|line| line.to_string().contains(SENT_TEXT))
        .collect()
}

/// The demo sent texts and they went all the way through (so there was something to leak).
fn assert_delivered(summary: &Value) {
    let delivered = summary["delivered"].as_u64().expect("delivered");
    assert!(delivered >= 4, "too few events to mean anything: {summary}");
    assert_eq!(summary["lost"], 0, "{summary}");
}

#[test]
fn no_message_text_reaches_a_trace_log_without_logging_bodies() {
    let (summary, lines) = demo_at_trace(false);
    assert_delivered(&summary);
    let leaks = with_sent_text(&lines);
    assert!(
        leaks.is_empty(),
        "{} log lines carry a message text, first: {}",
        leaks.len(),
        leaks[0]
    );
    // The line that would carry it ran, and said what it left out.
    let kept = lines
        .iter()
        .filter(|line| line["message"] == "kept by the policy")
        .collect::<Vec<_>>();
    assert!(
        !kept.is_empty(),
        "no 'kept by the policy' debug line at trace"
    );
    assert!(
        kept.iter().all(|line| line["text"]
            .as_str()
            .is_some_and(|t| t.ends_with("bytes; logging.bodies is off>"))),
        "{}",
        kept[0]
    );
}

/// Every form in which a secret of the run could be printed, named for the report.
struct Secrets {
    names: Vec<String>,
    needles: Vec<String>,
}

impl Secrets {
    fn add(&mut self, name: String, needle: String) {
        self.names.push(name);
        self.needles.push(needle);
    }

    /// `text` and every `width`-character window of it.
    fn add_windows(&mut self, name: &str, text: &str, width: usize) {
        self.add(format!("{name} (whole)"), text.to_string());
        for at in 0..=text.len().saturating_sub(width) {
            self.add(
                format!("{name} [{at}..+{width}]"),
                text[at..at + width].to_string(),
            );
        }
    }

    /// The auth key `key` of account `a`: whole and every 16-byte window of it, in hex (both
    /// cases), base64 (standard and URL-safe, padded or not) and a `Debug` byte list. A window
    /// of an encoded whole key is a window of the encoding; a window encoded on its own starts
    /// the encoding of `key[at..]`, so both are looked for.
    fn add_key(&mut self, a: usize, key: &[u8; 256]) {
        const WINDOW: usize = 16;
        /// Base64 characters that encode the first 16 bytes wholly (⌊16·8/6⌋).
        const B64_WINDOW: usize = 21;
        let hex_lower = hex::encode(key);
        self.add_windows(&format!("account {a} key, hex"), &hex_lower, 2 * WINDOW);
        self.add_windows(
            &format!("account {a} key, HEX"),
            &hex_lower.to_uppercase(),
            2 * WINDOW,
        );
        for (alphabet, padded, bare) in [
            ("base64", STANDARD, STANDARD_NO_PAD),
            ("base64url", URL_SAFE, URL_SAFE_NO_PAD),
        ] {
            let name = format!("account {a} key, {alphabet}");
            self.add(format!("{name} (padded)"), padded.encode(key));
            self.add_windows(&name, &bare.encode(key), B64_WINDOW);
            for at in 1..=key.len() - WINDOW {
                let own = bare.encode(&key[at..]);
                self.add(
                    format!("{name} of key[{at}..]"),
                    own[..B64_WINDOW].to_string(),
                );
            }
        }
        for at in (0..=key.len() - WINDOW).step_by(WINDOW / 2) {
            let list = format!("{:?}", &key[at..at + WINDOW]);
            self.add(
                format!("account {a} key, Debug list [{at}..+{WINDOW}]"),
                list.trim_matches(|c| c == '[' || c == ']').to_string(),
            );
        }
    }

    /// Every secret of the seeded fake-DC demo whose fake DC listened on `addr`.
    fn of_demo(addr: std::net::SocketAddr) -> Secrets {
        let mut secrets = Secrets {
            names: Vec::new(),
            needles: Vec::new(),
        };
        for a in 0..ACCOUNTS {
            let key = fake_dc_account_key(SEED, a);
            secrets.add_key(a, &key);
            // The fake DC's default DC id.
            let session = telethon_session_string(2, addr, &key);
            secrets.add_windows(&format!("account {a} session string"), &session, 24);
            let phone = fake_dc_account_phone(SEED, a);
            secrets.add(format!("account {a} phone, E.164"), format!("+{phone}"));
            secrets.add(format!("account {a} phone, digits"), phone);
        }
        secrets
    }

    /// The secrets found in `log`: one `(what, line)` per secret and line, first found first.
    fn found_in<'a>(&self, log: &[&'a str]) -> Vec<(&str, &'a str)> {
        let matcher = AhoCorasick::new(&self.needles).expect("the secrets make an automaton");
        let mut found = Vec::new();
        for line in log {
            for hit in matcher.find_overlapping_iter(*line) {
                found.push((self.names[hit.pattern().as_usize()].as_str(), *line));
            }
        }
        found
    }
}

/// Where the run's fake DC listened: its `listening` line (the session strings name it).
fn fake_dc_addr(lines: &[Value]) -> std::net::SocketAddr {
    let line = lines
        .iter()
        .find(|line| line["message"] == "fake dc: listening")
        .expect("no 'fake dc: listening' line");
    line["addr"]
        .as_str()
        .and_then(|addr| addr.parse().ok())
        .unwrap_or_else(|| panic!("no address in {line}"))
}

#[test]
fn no_auth_key_session_string_or_phone_reaches_a_trace_log() {
    let (summary, lines) = demo_at_trace(false);
    assert_delivered(&summary);
    // The run derived its accounts' secrets from the test's seed (else the canary looks for
    // values the run never had).
    assert!(
        lines
            .iter()
            .any(|line| line["message"]
                == format!("fake dc: account secrets from {FAKE_DC_SEED_ENV}")),
        "the demo did not take its account secrets from {FAKE_DC_SEED_ENV}"
    );
    let secrets = Secrets::of_demo(fake_dc_addr(&lines));
    let log: Vec<String> = lines.iter().map(Value::to_string).collect();
    let log: Vec<&str> = log.iter().map(String::as_str).collect();
    let leaks = secrets.found_in(&log);
    assert!(
        leaks.is_empty(),
        "{} secrets in the trace log, first: {} in {}",
        leaks.len(),
        leaks[0].0,
        leaks[0].1
    );
    // No login code: the accounts were imported, no `auth.*` request went out.
    let auth = lines
        .iter()
        .filter(|line| {
            line["req_name"]
                .as_str()
                .is_some_and(|r| r.starts_with("auth."))
        })
        .collect::<Vec<_>>();
    assert!(auth.is_empty(), "a login request: {}", auth[0]);
}

/// The canary can fail: a line carrying a key window (at an offset no whole encoding starts at),
/// a session-string window, or a phone is found by the same search.
#[test]
fn the_secret_search_finds_a_window_of_a_key_in_a_line() {
    let addr: std::net::SocketAddr = "127.0.0.1:40000".parse().unwrap();
    let secrets = Secrets::of_demo(addr);
    let key = fake_dc_account_key(SEED, 1);
    let session = telethon_session_string(2, addr, &key);
    let phone = fake_dc_account_phone(SEED, 0);
    let lines = [
        format!(
            r#"{{"message":"key","k":"{}"}}"#,
            hex::encode(&key[37..37 + 16])
        ),
        format!(
            r#"{{"message":"key","k":"{}"}}"#,
            hex::encode_upper(&key[100..140])
        ),
        format!(
            r#"{{"message":"key","k":"{}"}}"#,
            STANDARD.encode(&key[5..5 + 16])
        ),
        format!(
            r#"{{"message":"key","k":"x{}"}}"#,
            &URL_SAFE_NO_PAD.encode(key)[50..80]
        ),
        format!(r#"{{"message":"key","k":{:?}}}"#, &key[8..8 + 16]),
        format!(r#"{{"message":"session","s":"{}"}}"#, &session[101..125]),
        format!(r#"{{"message":"me","phone":"{phone}"}}"#),
    ];
    let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
    for line in &lines {
        assert!(
            !secrets.found_in(&[line]).is_empty(),
            "the search missed the secret in {line}"
        );
    }
    // Other accounts' values are looked for too, and an unrelated line is clean.
    assert!(
        secrets
            .found_in(&[r#"{"message":"demo message 1","n":1234567890}"#])
            .is_empty()
    );
}

#[test]
fn logging_bodies_shows_texts_only_below_info() {
    let (summary, lines) = demo_at_trace(true);
    assert_delivered(&summary);
    let with_text = with_sent_text(&lines);
    assert!(
        !with_text.is_empty(),
        "logging.bodies = true, yet no log line shows a message text"
    );
    for line in with_text {
        let level = line["level"].as_str().unwrap_or("?");
        assert!(
            level == "DEBUG" || level == "TRACE",
            "a message text at {level}: {line}"
        );
    }
}

/// Every `.rs` file under `dir`.
fn rust_files(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The rule the runs above cannot see whole: a `Body` field (the only way a text enters a log
/// line) stands in a `debug!` or `trace!` line, never in one that `info` lets through.
#[test]
fn every_body_field_is_in_a_debug_or_trace_line() {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut uses = 0;
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for (at, _) in text.match_indices("telemetry::Body(") {
            uses += 1;
            // The macro this field belongs to: the last `…!(` before it.
            let before = &text[..at];
            let open = before.rfind("!(").expect("a Body outside a macro");
            let name_start = before[..open]
                .rfind(|c: char| !(c.is_alphanumeric() || c == '_'))
                .map_or(0, |i| i + 1);
            let macro_name = &before[name_start..open];
            assert!(
                macro_name == "debug" || macro_name == "trace",
                "{}: a message body in a `{macro_name}!` line",
                file.display()
            );
        }
    }
    assert!(
        uses > 0,
        "no telemetry::Body use found: the search is stale"
    );
}
