//! `tgingest keys rotate` through the real binary: sessions and the event-log chain key move to
//! the new master key, the log still verifies and records the rotation, a re-run is harmless, and
//! a running node, a readable key file or the same key are refused before anything changes.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use support::{TestNats, signal, tgingest_cmd, wait_until};
use tgingest::bus::Bus;
use tgingest::config::Config;
use tgingest::eventlog::{AuditEntry, ChainKey, EventLog, RecordKind};
use tgingest::keys::MasterKey;
use tgingest::telegram::session::{SessionError, SessionSnapshot, SessionStore, StoreError};

const OLD: [u8; 32] = [0x11; 32];
const NEW: [u8; 32] = [0x22; 32];
const ACCOUNTS: [&str; 3] = ["acct-1", "acct-2", "acct-3"];

fn write_key(path: &Path, key: [u8; 32], mode: u32) {
    std::fs::write(path, hex::encode(key)).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A `tgingest` command on `data_dir` and an external NATS, with the master key in `key_file`.
fn cmd(data_dir: &Path, nats_url: &str, key_file: &Path) -> Command {
    let mut cmd = tgingest_cmd(data_dir);
    cmd.env("TGINGEST_NATS_URL", nats_url)
        .env("TGINGEST_MASTER_KEY_FILE", key_file);
    cmd
}

fn rotate(data_dir: &Path, nats_url: &str, key_file: &Path, new_key_file: &Path) -> Output {
    cmd(data_dir, nats_url, key_file)
        .args(["keys", "rotate", "--new-key-file"])
        .arg(new_key_file)
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn verify(data_dir: &Path, nats_url: &str, key_file: &Path) -> Output {
    cmd(data_dir, nats_url, key_file)
        .args(["audit", "verify"])
        .output()
        .unwrap()
}

/// `audit verify --node` for the node `tgingest_cmd` names, from TG_AUDIT alone.
fn verify_node(data_dir: &Path, nats_url: &str, key_file: &Path) -> Output {
    cmd(data_dir, nats_url, key_file)
        .args(["audit", "verify", "--node", "test-node"])
        .output()
        .unwrap()
}

/// Runs `tgingest run` until it is up, so the log, its chain key and the buckets exist; returns
/// the running child.
fn start_node(data_dir: &Path, nats_url: &str, key_file: &Path) -> std::process::Child {
    let log_path = data_dir.join("node.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut child = cmd(data_dir, nats_url, key_file)
        .arg("run")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn tgingest run");
    let up = wait_until(Duration::from_secs(60), || {
        std::fs::read_to_string(&log_path)
            .unwrap_or_default()
            .contains("node running")
    });
    if !up {
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "tgingest run did not come up; its log:\n{}",
            std::fs::read_to_string(&log_path).unwrap_or_default()
        );
    }
    child
}

fn stop_node(mut child: std::process::Child) {
    signal(child.id(), libc::SIGTERM);
    let status = child.wait().unwrap();
    assert!(status.success(), "node exit status {status}");
}

/// The audit entries of the log in `data_dir`, opened with the chain key sealed under `master`.
fn audit_entries(data_dir: &Path, master: [u8; 32]) -> Vec<AuditEntry> {
    let dir = data_dir.join("eventlog");
    let chain_key = ChainKey::open(&dir, &MasterKey::from_bytes(master)).unwrap();
    let log = EventLog::open(&dir, chain_key.bytes()).unwrap();
    log.records()
        .map(|r| r.unwrap())
        .filter(|r| r.kind == RecordKind::Audit)
        .map(|r| tgingest::codec::decode(&r.body).unwrap())
        .collect()
}

async fn store(nats_url: &str, master: [u8; 32]) -> SessionStore {
    let bus = Bus::connect(nats_url, &Config::default().nats, "test")
        .await
        .unwrap();
    SessionStore::open(&bus, MasterKey::from_bytes(master))
        .await
        .unwrap()
}

fn snapshot(home_dc: i32) -> SessionSnapshot {
    let mut data = grammers_session::SessionData {
        home_dc,
        ..Default::default()
    };
    if let Some(dc) = data.dc_options.get_mut(&home_dc) {
        dc.auth_key = Some([0x5a; 256]);
    }
    SessionSnapshot::from_session_data(&data)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_moves_sessions_and_chain_key_to_the_new_key_and_the_log_still_verifies() {
    let nats = TestNats::start();
    let url = nats.url();
    let data = tempfile::tempdir().unwrap();
    let keys = tempfile::tempdir().unwrap();
    let (old_file, new_file) = (keys.path().join("old.key"), keys.path().join("new.key"));
    write_key(&old_file, OLD, 0o600);
    write_key(&new_file, NEW, 0o600);

    // A node has run with the old key: the log, its sealed chain key and the buckets exist.
    let node = start_node(data.path(), &url, &old_file);
    let out = rotate(data.path(), &url, &old_file, &new_file);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("stop the node first"),
        "{}",
        text(&out)
    );
    stop_node(node);
    assert!(data.path().join("eventlog/chain.key").is_file());

    let old_store = store(&url, OLD).await;
    for (i, account) in ACCOUNTS.iter().enumerate() {
        old_store
            .put(account, &snapshot(i as i32 + 1))
            .await
            .unwrap();
    }

    let out = rotate(data.path(), &url, &old_file, &new_file);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("sessions re-sealed:              3"),
        "{stdout}"
    );
    assert!(stdout.contains("re-sealed under the new key"), "{stdout}");

    // Sessions open with the new key only.
    let new_store = store(&url, NEW).await;
    for (i, account) in ACCOUNTS.iter().enumerate() {
        let s = new_store.get(account).await.unwrap().unwrap();
        assert_eq!(s.home_dc, i as i32 + 1);
        assert!(matches!(
            old_store.get(account).await,
            Err(StoreError::Session(SessionError::Unseal { .. }))
        ));
    }

    // The log verifies with the new key (which opens the chain key), not with the old one.
    let out = verify(data.path(), &url, &new_file);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["ok"], true, "{report}");
    let out = verify(data.path(), &url, &old_file);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("does not open with this master key"),
        "{}",
        text(&out)
    );
    // So does the node's copy in TG_AUDIT, whose chain key in TG_ANCHORS was re-sealed too: an
    // auditor with the new key can still verify a node whose data dir is gone.
    assert!(
        stdout.contains("chain keys in TG_ANCHORS:        1 re-sealed"),
        "{stdout}"
    );
    let out = verify_node(data.path(), &url, &new_file);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = verify_node(data.path(), &url, &old_file);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let rotated: Vec<AuditEntry> = audit_entries(data.path(), NEW)
        .into_iter()
        .filter(|e| e.action == "keys.rotated")
        .collect();
    assert_eq!(rotated.len(), 1);
    assert_eq!(rotated[0].details["sessions_resealed"], "3");
    assert_eq!(rotated[0].details["chain_key"], "resealed");

    // Running it again (as after an interruption) finds everything moved and changes nothing.
    let out = rotate(data.path(), &url, &old_file, &new_file);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("sessions re-sealed:              0"),
        "{stdout}"
    );
    assert!(stdout.contains("already under new key:  3"), "{stdout}");
    assert!(stdout.contains("already under the new key"), "{stdout}");
    for account in ACCOUNTS {
        assert!(new_store.get(account).await.unwrap().is_some());
    }
    let out = verify(data.path(), &url, &new_file);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let entries = audit_entries(data.path(), NEW);
    assert_eq!(
        entries
            .iter()
            .filter(|e| e.action == "keys.rotated")
            .count(),
        2
    );

    // Interrupted after the sessions, before the chain key: running it again finishes the job.
    let dir = data.path().join("eventlog");
    let chain_key = ChainKey::open(&dir, &MasterKey::from_bytes(NEW)).unwrap();
    chain_key
        .seal_to(&dir, &MasterKey::from_bytes(OLD))
        .unwrap();
    let out = rotate(data.path(), &url, &old_file, &new_file);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("already under new key:  3"), "{stdout}");
    assert!(stdout.contains("re-sealed under the new key"), "{stdout}");
    assert_eq!(
        ChainKey::open(&dir, &MasterKey::from_bytes(NEW))
            .unwrap()
            .bytes(),
        chain_key.bytes()
    );

    // With the new key configured, the node starts on the same log.
    let node = start_node(data.path(), &url, &new_file);
    stop_node(node);
    let out = verify(data.path(), &url, &new_file);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

#[test]
fn a_readable_new_key_file_or_the_same_key_is_refused_before_anything_changes() {
    let data = tempfile::tempdir().unwrap();
    let keys = tempfile::tempdir().unwrap();
    let (old_file, new_file) = (keys.path().join("old.key"), keys.path().join("new.key"));
    write_key(&old_file, OLD, 0o600);
    write_key(&new_file, NEW, 0o644);
    // Nothing listens here: reaching NATS would fail differently.
    let url = "nats://127.0.0.1:1";

    let out = rotate(data.path(), url, &old_file, &new_file);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("new master key") && stderr.contains("chmod 600"),
        "{}",
        text(&out)
    );

    let out = rotate(data.path(), url, &old_file, &old_file);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is the key already in use"),
        "{}",
        text(&out)
    );
    let created: Vec<PathBuf> = std::fs::read_dir(data.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(created.is_empty(), "refused, yet wrote {created:?}");
}
