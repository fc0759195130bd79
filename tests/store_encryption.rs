//! The embedded nats-server's JetStream store is encrypted at rest under a key derived from the
//! master key: no message text, chat title or sender name can be found in its files, the key is
//! in neither its config file, its command line nor its log, a plaintext store from an earlier
//! version keeps its events, and `keys rotate` re-encrypts the store under the new key.

mod support;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use support::events::Message;
use support::{nats_servers_under, signal, tgingest_cmd, wait_until};
use tgingest::bus::{Bus, STREAM_RAW, raw_subject};
use tgingest::config::Config;
use tgingest::event::{ChatKind, Event};
use tgingest::keys::{KeyPurpose, MasterKey};
use tgingest::nats_server::NatsServer;
use tgingest::nats_server::encryption::{KEY_ID_FILE, StoreEncryption, StoreKey};
use tgingest::node::embedded_server_options;

const KEY_A: [u8; 32] = [0x3a; 32];
const KEY_B: [u8; 32] = [0x4b; 32];
const EVENTS: u64 = 20;

/// Strings that must never be readable in an encrypted store: unique per run, so a match is
/// this run's data and not a coincidence.
struct Canaries {
    text: String,
    title: String,
    sender: String,
}

impl Canaries {
    fn new() -> Self {
        let tag = hex::encode(rand::random::<[u8; 8]>());
        Canaries {
            text: format!("canary-text-{tag} the meeting moved to thursday"),
            title: format!("canary-title-{tag} Family Chat"),
            sender: format!("canary-sender-{tag} Jane Roe"),
        }
    }

    fn all(&self) -> [&str; 3] {
        [&self.text, &self.title, &self.sender]
    }

    /// Message `n` of a supergroup whose title, sender and text carry the canaries.
    fn event(&self, n: u64) -> Event {
        Message {
            kind: ChatKind::Supergroup,
            bare_chat: 4_242,
            n,
            title: Some(&self.title),
            sender_name: Some(&self.sender),
            text: format!("{} #{n}", self.text),
        }
        .event()
    }
}

/// An embedded-default config on `dir/data` (what `tgingest run` without `nats.url` uses).
fn config(dir: &Path) -> Config {
    let mut config = Config::default();
    config.node.id = "test-node".into();
    config.node.data_dir = dir.join("data");
    config.nats.url = String::new();
    config
}

/// Starts the embedded server on `config`'s store the way the node does, encrypted with
/// `encryption` (`None`: the plaintext store of versions before this one).
fn start_server(
    config: &Config,
    encryption: Option<StoreEncryption>,
) -> Result<NatsServer, tgingest::nats_server::NatsServerError> {
    let placeholder = StoreEncryption::new(&MasterKey::from_bytes([0; 32]));
    let mut options = embedded_server_options(config, placeholder).expect("nats-server binary");
    options.encryption = encryption;
    NatsServer::start(options)
}

async fn bus(server: &NatsServer, config: &Config) -> Bus {
    let bus = Bus::connect(&server.url(), &config.nats, "test")
        .await
        .expect("connect");
    bus.setup(config).await.expect("bus set-up");
    bus
}

/// Publishes [`EVENTS`] canary events to `TG_RAW` as a source does.
async fn publish(bus: &Bus, canaries: &Canaries) {
    for n in 0..EVENTS {
        let e = canaries.event(n);
        let payload = tgingest::codec::encode(&e).expect("encode").into();
        bus.publish_acked(
            raw_subject(&e.account_id, e.chat.kind),
            e.event_id.clone(),
            payload,
        )
        .await
        .expect("TG_RAW PubAck");
    }
}

/// The events `TG_RAW` holds, decoded.
async fn stored_events(bus: &Bus) -> Vec<Event> {
    let stream = bus.js.get_stream(STREAM_RAW).await.expect("TG_RAW");
    let last = stream.cached_info().state.last_sequence;
    let mut out = Vec::new();
    for seq in 1..=last {
        let message = stream.get_raw_message(seq).await.expect("stored message");
        out.push(tgingest::codec::decode(&message.payload).expect("decode"));
    }
    out
}

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).expect("read store dir").flatten() {
            let path = entry.path();
            if path.is_dir() {
                todo.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out
}

/// `(file, canary)` for every canary found in a file under `dir`.
fn canaries_in(dir: &Path, canaries: &[&str]) -> Vec<(PathBuf, String)> {
    let mut found = Vec::new();
    for file in files_under(dir) {
        let bytes = std::fs::read(&file).expect("read store file");
        for canary in canaries {
            if bytes.windows(canary.len()).any(|w| w == canary.as_bytes()) {
                found.push((file.clone(), canary.to_string()));
            }
        }
    }
    found
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().unwrap()
}

#[test]
fn the_encrypted_store_holds_no_message_text_and_a_plaintext_one_does() {
    let canaries = Canaries::new();
    let rt = rt();
    let scan = |encryption: Option<StoreEncryption>| {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path());
        let server = start_server(&config, encryption).expect("start");
        rt.block_on(async {
            let bus = bus(&server, &config).await;
            publish(&bus, &canaries).await;
            assert_eq!(stored_events(&bus).await.len() as u64, EVENTS);
        });
        drop(server);
        canaries_in(&config.nats_store_dir(), &canaries.all())
    };

    // The scan can fail: in a plaintext store it finds every canary.
    let plain = scan(None);
    for canary in canaries.all() {
        assert!(
            plain.iter().any(|(_, c)| c == canary),
            "the scan did not find {canary:?} in a plaintext store: {plain:?}"
        );
    }
    let master = MasterKey::from_bytes(KEY_A);
    let encrypted = scan(Some(StoreEncryption::new(&master)));
    assert!(encrypted.is_empty(), "readable in the store: {encrypted:?}");
}

#[test]
fn a_plaintext_store_from_an_earlier_version_keeps_its_events_once_encrypted() {
    let canaries = Canaries::new();
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let rt = rt();
    let server = start_server(&config, None).expect("start plaintext");
    rt.block_on(async { publish(&bus(&server, &config).await, &canaries).await });
    drop(server);
    assert!(!canaries_in(&config.nats_store_dir(), &canaries.all()).is_empty());

    let master = MasterKey::from_bytes(KEY_A);
    let server = start_server(&config, Some(StoreEncryption::new(&master))).expect("start");
    let events = rt.block_on(async { stored_events(&bus(&server, &config).await).await });
    assert_eq!(events.len() as u64, EVENTS, "events lost by the upgrade");
    assert_eq!(events[3], canaries.event(3));
    drop(server);
    let left = canaries_in(&config.nats_store_dir(), &canaries.all());
    assert!(
        left.is_empty(),
        "still readable after the upgrade: {left:?}"
    );
}

fn write_key(path: &Path, key: [u8; 32]) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, hex::encode(key)).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// `tgingest` in the embedded default on `dir/data`, with the master key in `key_file`.
fn tgingest(dir: &Path, key_file: &Path) -> std::process::Command {
    let mut cmd = tgingest_cmd(&dir.join("data"));
    cmd.env("TGINGEST_MASTER_KEY_FILE", key_file);
    cmd
}

#[test]
fn keys_rotate_re_encrypts_the_store_under_the_new_key_and_the_old_one_can_go() {
    let canaries = Canaries::new();
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let (a, b) = (MasterKey::from_bytes(KEY_A), MasterKey::from_bytes(KEY_B));
    let rt = rt();
    let server = start_server(&config, Some(StoreEncryption::new(&a))).expect("start");
    rt.block_on(async { publish(&bus(&server, &config).await, &canaries).await });
    drop(server);

    let (key_a, key_b) = (dir.path().join("a.key"), dir.path().join("b.key"));
    write_key(&key_a, KEY_A);
    write_key(&key_b, KEY_B);
    let out = tgingest(dir.path(), &key_a)
        .args(["keys", "rotate", "--new-key-file"])
        .arg(&key_b)
        .output()
        .unwrap();
    assert!(out.status.success(), "keys rotate: {out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("embedded JetStream store:        re-encrypted under the new key"),
        "{stdout}"
    );
    let store = config.nats_store_dir();
    let recorded = std::fs::read_to_string(store.join(KEY_ID_FILE)).unwrap();
    assert_eq!(recorded.trim(), StoreKey::derive(&b).id());

    // The old key is gone: the new one alone opens every event.
    let server = start_server(&config, Some(StoreEncryption::new(&b))).expect("start with B");
    let events = rt.block_on(async { stored_events(&bus(&server, &config).await).await });
    assert_eq!(events.len() as u64, EVENTS, "events lost by the rotation");
    assert_eq!(events[7], canaries.event(7));
    drop(server);
    assert!(canaries_in(&store, &canaries.all()).is_empty());

    // The old key is refused before nats-server sees the store (which would drop the streams).
    let out = tgingest(dir.path(), &key_a)
        .arg("run")
        .stdout(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a node started with the old key");
    assert!(
        stderr.contains("encrypted under another master key"),
        "{stderr}"
    );
    let server = start_server(&config, Some(StoreEncryption::new(&b))).expect("start with B");
    let events = rt.block_on(async { stored_events(&bus(&server, &config).await).await });
    assert_eq!(
        events.len() as u64,
        EVENTS,
        "the refused start touched the store"
    );
}

#[test]
fn the_store_key_is_in_neither_the_config_file_nor_the_command_line_nor_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("master.key");
    write_key(&key_file, KEY_A);
    let log_path = dir.path().join("node.log");
    let mut node = tgingest(dir.path(), &key_file)
        .env("TGINGEST_LOGGING_LEVEL", "trace")
        .arg("run")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let up = wait_until(Duration::from_secs(60), || {
        std::fs::read_to_string(&log_path)
            .unwrap_or_default()
            .contains("node running")
    });
    let servers = nats_servers_under(dir.path());
    let cmdline = servers
        .iter()
        .map(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default())
        .collect::<Vec<_>>();
    signal(node.id(), libc::SIGTERM);
    let status = node.wait().unwrap();
    assert!(up, "node did not come up");
    assert!(status.success(), "node exit status {status}");
    assert_eq!(servers.len(), 1, "one embedded nats-server");

    let store_key = hex::encode(
        MasterKey::from_bytes(KEY_A)
            .derive(KeyPurpose::NatsStore)
            .bytes(),
    );
    let master_key = hex::encode(KEY_A);
    let store = dir.path().join("data/nats");
    let config_text = std::fs::read_to_string(store.join("nats-server.conf")).unwrap();
    assert!(config_text.contains("cipher: chachapoly"), "{config_text}");
    let nats_log = std::fs::read_to_string(store.join("nats-server.log")).unwrap();
    let node_log = std::fs::read_to_string(&log_path).unwrap();
    let places = [
        ("config file", config_text.into_bytes()),
        ("command line", cmdline.concat()),
        ("nats-server log", nats_log.into_bytes()),
        ("node log", node_log.into_bytes()),
    ];
    for (place, bytes) in places {
        for (name, secret) in [("store key", &store_key), ("master key", &master_key)] {
            let found = bytes
                .windows(secret.len())
                .any(|w| w.eq_ignore_ascii_case(secret.as_bytes()));
            assert!(!found, "the {name} is in the {place}");
        }
    }
}
