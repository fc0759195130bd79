//! `tgingest config check` over the shipped configs and over broken ones, through the real binary.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use support::{canary, tgingest_bin};
use tgingest::config::{Config, load};

/// Runs `tgingest config check` with a clean environment plus `env`.
fn check(file: Option<&Path>, env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(tgingest_bin());
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.arg("config").arg("check");
    if let Some(f) = file {
        cmd.arg("--config").arg(f);
    }
    cmd.output().expect("run tgingest")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn toml_files(dir: &str) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("{}: {e}", root.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    files
}

const KEY: &str = "0000000000000000000000000000000000000000000000000000000000000001";

#[test]
fn every_shipped_config_passes_the_check() {
    let files = toml_files("config");
    assert!(
        files.len() >= 2,
        "expected the default and the production example"
    );
    for file in files {
        let out = check(Some(&file), &[("TGINGEST_MASTER_KEY", KEY)]);
        assert!(
            out.status.success(),
            "{}: {}",
            file.display(),
            text(&out.stderr)
        );
        assert!(
            text(&out.stdout).starts_with("# config OK"),
            "{}",
            text(&out.stdout)
        );
    }
}

#[test]
fn the_shipped_default_config_equals_the_built_in_defaults() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/tgingest.toml");
    let loaded = load(Some(&file), Vec::new()).unwrap();
    assert_eq!(
        loaded.config,
        Config::default(),
        "config/tgingest.toml drifted from the code's defaults"
    );
}

#[test]
fn every_broken_config_fails_with_a_precise_message() {
    let files = toml_files("tests/fixtures/bad-configs");
    assert!(files.len() >= 25);
    for file in files {
        let body = std::fs::read_to_string(&file).unwrap();
        let expects: Vec<&str> = body
            .lines()
            .filter_map(|l| l.strip_prefix("# expect: "))
            .collect();
        assert!(
            !expects.is_empty(),
            "{} has no `# expect:` line",
            file.display()
        );
        let out = check(Some(&file), &[]);
        let stderr = text(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{}: exit {:?}, stderr {stderr}",
            file.display(),
            out.status.code()
        );
        assert!(
            stderr.contains(&*file.to_string_lossy()),
            "{}: the message does not name the file: {stderr}",
            file.display()
        );
        for expect in expects {
            assert!(
                stderr.contains(expect),
                "{}: expected {expect:?} in {stderr}",
                file.display()
            );
        }
        assert!(
            out.stdout.is_empty(),
            "a broken config must print no config"
        );
    }
}

#[test]
fn environment_overrides_are_applied_reported_and_checked() {
    let out = check(
        None,
        &[
            ("CONNECTOR_MAX_INFLIGHT", "32"),
            ("TGINGEST_STREAMS_RAW_MAX_AGE", "6h"),
        ],
    );
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        stdout.contains("max_inflight = 32") && stdout.contains("max_age = \"6h\""),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "switchboard.max_inflight set by environment variable CONNECTOR_MAX_INFLIGHT"
        ),
        "{stdout}"
    );

    let out = check(None, &[("CONNECTOR_CHANNEL", "sms")]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("environment variable CONNECTOR_CHANNEL")
            && stderr.contains("switchboard.channel"),
        "{stderr}"
    );

    let out = check(None, &[("TGINGEST_SWITCHBORD_URL", "http://x/mcp")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("TGINGEST_SWITCHBORD_URL is not a config key"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn secrets_never_appear_in_the_printed_config() {
    let hash = "0123456789abcdef0123456789abcdef";
    // Bytes no run of eight of which comes up by chance, unlike the zeros of `KEY`.
    let key_bytes: Vec<u8> = (0..32u8)
        .map(|i| i.wrapping_mul(37).wrapping_add(11))
        .collect();
    let key = hex::encode(&key_bytes);
    let token = "tok-canary-123";
    let out = check(
        None,
        &[
            ("TELEGRAM_API_HASH", hash),
            ("TGINGEST_SWITCHBOARD_AUTH_TOKEN", token),
            ("TGINGEST_MASTER_KEY", &key),
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    for secret in [hash, token, &key, &key.to_uppercase()] {
        assert!(!all.contains(secret), "secret printed: {all}");
    }
    // As `#[derive(Debug)]` prints bytes: a decimal list.
    for secret in [&key_bytes[..], hash.as_bytes(), token.as_bytes()] {
        let list = canary::decimal_list_in(&all, secret);
        assert_eq!(list, None, "secret bytes printed as a decimal list: {all}");
    }
    assert!(all.contains("api_hash = \"***\""));
}

#[test]
fn the_documented_non_config_variables_are_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("master.key");
    tgingest::keys::MasterKey::generate_file(&key).unwrap();
    let key = key.to_string_lossy().into_owned();
    let out = check(
        None,
        &[
            ("TGINGEST_MASTER_KEY_FILE", &key),
            ("TGINGEST_NATS_URL", "nats://127.0.0.2:4222"),
            ("TGINGEST_NATS_SERVER", "/nonexistent"),
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("master key: File"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn an_external_nats_without_a_master_key_is_refused() {
    let out = check(None, &[("TGINGEST_NATS_URL", "nats://127.0.0.2:4222")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("no master key"),
        "{}",
        text(&out.stderr)
    );
}
