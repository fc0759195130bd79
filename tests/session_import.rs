//! Session-string import against strings written by the real Telethon and Pyrogram packages
//! (tests/fixtures/make_sessions.py; packages from scripts/install-python-test-deps.sh), and
//! broken strings refused with the right error, never echoing the string.

use std::net::{SocketAddrV4, SocketAddrV6};
use std::path::Path;
use std::process::Command;

use base64::Engine;
use base64::engine::general_purpose::{URL_SAFE, URL_SAFE_NO_PAD};
use grammers_session::SessionData;
use tgingest::telegram::session::{ImportError, SessionSnapshot, import_pyrogram, import_telethon};

#[derive(Debug, serde::Deserialize)]
struct Fixture {
    lib: String,
    format: String,
    string: String,
    dc_id: i32,
    ip: Option<String>,
    port: Option<u16>,
    auth_key_hex: String,
    user_id: Option<i64>,
    test_mode: bool,
    is_bot: bool,
}

/// The fixtures, generated once per test binary.
fn fixtures() -> &'static [Fixture] {
    static FIXTURES: std::sync::OnceLock<Vec<Fixture>> = std::sync::OnceLock::new();
    FIXTURES.get_or_init(generate)
}

fn generate() -> Vec<Fixture> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let tools = repo.join(".tools/python");
    let install = "scripts/install-python-test-deps.sh";
    assert!(
        tools.join("telethon").is_dir() && tools.join("pyrogram").is_dir(),
        "telethon/pyrogram are not in {}: run {install} first",
        tools.display()
    );
    let out = Command::new("python3")
        .arg(repo.join("tests/fixtures/make_sessions.py"))
        .env("PYTHONPATH", &tools)
        .output()
        .unwrap_or_else(|e| panic!("cannot run python3 ({e}); it and {install} are needed"));
    assert!(
        out.status.success(),
        "make_sessions.py failed (packages missing? run {install}):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let fixtures: Vec<Fixture> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert!(fixtures.len() >= 10, "too few fixtures: {}", fixtures.len());
    fixtures
}

fn key_of(f: &Fixture) -> [u8; 256] {
    hex::decode(&f.auth_key_hex).unwrap().try_into().unwrap()
}

/// The one DC carrying a key is the home DC, with the fixture's key; every other DC has none.
fn check_keys(f: &Fixture, s: &SessionSnapshot) {
    assert_eq!(s.home_dc, f.dc_id, "{f:?}");
    assert_eq!(s.home_auth_key(), Some(&key_of(f)), "{}", f.format);
    for dc in &s.dc_options {
        assert_eq!(dc.auth_key.is_some(), dc.id == f.dc_id, "{s:?}");
    }
    let debug = format!("{s:?}");
    assert!(
        !debug.contains(&f.auth_key_hex[..16]),
        "Debug shows the key"
    );
}

#[test]
fn telethon_strings_decode_exactly() {
    let all = fixtures();
    let telethon: Vec<_> = all.iter().filter(|f| f.lib == "telethon").collect();
    assert!(telethon.iter().any(|f| f.format == "ipv6"));
    assert!(telethon.iter().any(|f| f.format == "ipv4"));
    let defaults = SessionData::default();
    for f in telethon {
        let s = import_telethon(&f.string).unwrap_or_else(|e| panic!("{}: {e}", f.format));
        check_keys(f, &s);
        assert_eq!(s.dc_options.len(), 5);
        assert_eq!(s.user_id, None);
        assert!(!s.test_mode);
        let home = s.dc_options.iter().find(|d| d.id == f.dc_id).unwrap();
        let ip = f.ip.as_deref().unwrap();
        let port = f.port.unwrap();
        let default = &defaults.dc_options[&f.dc_id];
        if f.format == "ipv6" {
            assert_eq!(
                home.ipv6,
                SocketAddrV6::new(ip.parse().unwrap(), port, 0, 0)
            );
            assert_eq!(home.ipv4, default.ipv4);
        } else {
            assert_eq!(home.ipv4, SocketAddrV4::new(ip.parse().unwrap(), port));
            assert_eq!(home.ipv6, default.ipv6);
        }
        // Surrounding white space (a pasted line) does not matter.
        assert_eq!(import_telethon(&format!("  {}\n", f.string)).unwrap(), s);
    }
}

#[test]
fn pyrogram_strings_decode_exactly_in_every_format() {
    let all = fixtures();
    let defaults = SessionData::default();
    let mut formats = std::collections::BTreeSet::new();
    for f in all.iter().filter(|f| f.lib == "pyrogram" && !f.is_bot) {
        let s = import_pyrogram(&f.string).unwrap_or_else(|e| panic!("{}: {e}", f.format));
        check_keys(f, &s);
        assert_eq!(s.user_id, f.user_id);
        assert_eq!(s.test_mode, f.test_mode);
        let home = s.dc_options.iter().find(|d| d.id == f.dc_id).unwrap();
        if f.test_mode {
            assert_eq!(home.ipv4.to_string(), "149.154.167.40:443");
            assert_eq!(s.dc_options.len(), 3);
        } else {
            assert_eq!(home.ipv4, defaults.dc_options[&f.dc_id].ipv4);
            assert_eq!(s.dc_options.len(), 5);
        }
        formats.insert(f.format.clone());
    }
    assert_eq!(formats.len(), 3, "{formats:?}");
}

/// Asserts the error and that its message shares no 10 characters with the string.
fn refused(s: &str, err: ImportError) -> String {
    let msg = err.to_string();
    let chars: Vec<char> = s.trim().chars().collect();
    for w in chars.windows(10) {
        let w: String = w.iter().collect();
        assert!(!msg.contains(&w), "error {msg:?} echoes the string");
    }
    if !s.trim().is_empty() {
        assert!(
            !format!("{err:?}").contains(s.trim()),
            "Debug echoes the string"
        );
    }
    msg
}

fn telethon_err(s: &str) -> (ImportError, String) {
    let err = import_telethon(s).expect_err("refused");
    let msg = refused(s, err.clone());
    (err, msg)
}

fn pyrogram_err(s: &str) -> (ImportError, String) {
    let err = import_pyrogram(s).expect_err("refused");
    let msg = refused(s, err.clone());
    (err, msg)
}

fn telethon_string(dc: u8, port: u16, key: [u8; 256], extra: usize) -> String {
    let mut b = vec![dc, 149, 154, 167, 51];
    b.extend_from_slice(&port.to_be_bytes());
    b.extend_from_slice(&key);
    b.extend(std::iter::repeat_n(7, extra));
    format!("1{}", URL_SAFE.encode(b))
}

fn pyrogram_string(dc: u8, test: bool, key: [u8; 256], is_bot: bool) -> String {
    let mut b = vec![dc, 0, 0, 0, 9, test as u8];
    b.extend_from_slice(&key);
    b.extend_from_slice(&5_000_000_000i64.to_be_bytes());
    b.push(is_bot as u8);
    URL_SAFE_NO_PAD.encode(b)
}

#[test]
fn broken_telethon_strings_are_refused_precisely() {
    let all = fixtures();
    let good = &all.iter().find(|f| f.lib == "telethon").unwrap().string;

    let (e, msg) = telethon_err(&format!("2{}", &good[1..]));
    assert_eq!(e, ImportError::TelethonVersion { found: '2' }, "{msg}");
    assert!(matches!(telethon_err("").0, ImportError::Empty { .. }));

    let mut bad = good.clone();
    bad.replace_range(20..21, "!");
    let (e, msg) = telethon_err(&bad);
    assert!(
        matches!(e, ImportError::BadBase64 { position: 21, .. }),
        "{msg}"
    );
    assert!(msg.contains("'!'") && msg.contains("character 21"), "{msg}");

    let mut plus = good.clone();
    plus.replace_range(30..31, "+");
    assert!(telethon_err(&plus).1.contains("url-safe"));

    // Truncations (past the optional '=' padding): either not a base64 length, or a wrong
    // decoded length naming both lengths.
    assert!(good.ends_with('='));
    for cut in [2, 3, 4, 40, good.len() - 2] {
        let (e, msg) = telethon_err(&good[..good.len() - cut]);
        match e {
            ImportError::WrongLength { .. } => assert!(msg.contains("263 (IPv4) or 275 (IPv6)")),
            ImportError::BadBase64Length { .. } | ImportError::BadBase64 { .. } => {}
            other => panic!("truncated by {cut}: {other:?}"),
        }
    }
    let (e, _) = telethon_err(&telethon_string(2, 443, [1; 256], 3));
    assert!(matches!(e, ImportError::WrongLength { found: 266, .. }));

    let (e, msg) = telethon_err(&telethon_string(2, 443, [0; 256], 0));
    assert!(matches!(e, ImportError::ZeroAuthKey { .. }), "{msg}");
    let (e, msg) = telethon_err(&telethon_string(9, 443, [1; 256], 0));
    assert!(
        matches!(e, ImportError::DcOutOfRange { dc_id: 9, .. }),
        "{msg}"
    );
    assert!(matches!(
        telethon_err(&telethon_string(0, 443, [1; 256], 0)).0,
        ImportError::DcOutOfRange { dc_id: 0, .. }
    ));
    assert!(matches!(
        telethon_err(&telethon_string(2, 0, [1; 256], 0)).0,
        ImportError::BadPort { .. }
    ));
    assert!(import_telethon(&telethon_string(2, 443, [1; 256], 0)).is_ok());
}

#[test]
fn broken_pyrogram_strings_are_refused_precisely() {
    let all = fixtures();
    let bot = all
        .iter()
        .find(|f| f.lib == "pyrogram" && f.is_bot)
        .unwrap();
    let (e, msg) = pyrogram_err(&bot.string);
    assert!(matches!(e, ImportError::BotSession { .. }), "{msg}");
    assert!(msg.contains("user account"), "{msg}");

    let good = &all
        .iter()
        .find(|f| f.lib == "pyrogram" && f.format == "current" && !f.is_bot)
        .unwrap()
        .string;
    for cut in [1, 3, 5, 100] {
        let (e, msg) = pyrogram_err(&good[..good.len() - cut]);
        match e {
            ImportError::WrongLength { .. } => assert!(msg.contains("271"), "{msg}"),
            ImportError::BadBase64Length { .. } | ImportError::BadBase64 { .. } => {}
            other => panic!("truncated by {cut}: {other:?}"),
        }
    }
    let mut bad = good.clone();
    bad.replace_range(0..1, "*");
    assert!(matches!(
        pyrogram_err(&bad).0,
        ImportError::BadBase64 { position: 1, .. }
    ));
    // A Telethon string is not a Pyrogram one.
    let telethon = &all.iter().find(|f| f.lib == "telethon").unwrap().string;
    assert!(import_pyrogram(telethon).is_err());

    assert!(matches!(
        pyrogram_err(&pyrogram_string(2, false, [0; 256], false)).0,
        ImportError::ZeroAuthKey { .. }
    ));
    assert!(matches!(
        pyrogram_err(&pyrogram_string(6, false, [1; 256], false)).0,
        ImportError::DcOutOfRange { dc_id: 6, .. }
    ));
    // Test servers have DCs 1 to 3 only.
    assert!(matches!(
        pyrogram_err(&pyrogram_string(4, true, [1; 256], false)).0,
        ImportError::DcOutOfRange { dc_id: 4, .. }
    ));
    assert!(import_pyrogram(&pyrogram_string(5, false, [1; 256], false)).is_ok());
}
