//! The link to an external NATS: TLS checked against `nats.tls.ca_file` and an NKey user
//! (`nats.nkey_file`), against a nats-server started from the shipped
//! `deploy/nats/nats-server.conf` and `tgingest-accounts.conf` with certificates and NKeys made
//! here. A node runs the pipeline, a replay and set-up through the shipped least-privilege
//! layout without one refused subject; the read-only user verifies the audit copy and is refused
//! a publish. Wrong credentials, a wrong CA and a missing publish grant each stop `tgingest run`
//! with exit 2 and a message naming the cause; a server that is not there is no such error.

mod support;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use nkeys::KeyPair;
use support::certs::TestCa;
use support::{binary, signal, simulate, tgingest_cmd, wait_exit, wait_until};
use tgingest::bus::{Bus, BusError};
use tgingest::config::NatsConfig;
use tgingest::keys::MasterKey;
use tgingest::nats_server::{NatsServer, ServerOptions};
use tgingest::switchboard::{FakeOptions, FakeSwitchboard};
use tgingest::telegram::simulated::{SimulatedWorld, SimulatorConfig};

const NODE_ID: &str = "secure-node";
/// How long a node or a tool may take; generous for a busy 2-core machine, not a measurement.
const WAIT: Duration = Duration::from_secs(120);

/// A nats-server running the shipped config with TLS and the two tgingest users.
struct SecureNats {
    server: NatsServer,
    ca: TestCa,
    ingest: KeyPair,
    reader: KeyPair,
    dir: tempfile::TempDir,
}

impl SecureNats {
    /// Starts the shipped config; `edit` may change the accounts file's text first.
    fn start(edit: impl FnOnce(String) -> String) -> SecureNats {
        let dir = tempfile::tempdir().unwrap();
        let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/nats");
        let conf = dir.path().join("conf");
        std::fs::create_dir_all(&conf).unwrap();
        let store = dir.path().join("server");
        // The file's store, ports and monitoring port are a real host's; these are the test's
        // (the ports by command-line flags, which win over the file).
        let server_conf = std::fs::read_to_string(deploy.join("nats-server.conf")).unwrap();
        let host_store = "store_dir: /var/lib/nats/jetstream";
        assert!(server_conf.contains(host_store));
        let server_conf =
            server_conf.replace(host_store, &format!("store_dir: {:?}", store.join("js")));
        std::fs::write(conf.join("nats-server.conf"), server_conf).unwrap();
        let accounts = std::fs::read_to_string(deploy.join("tgingest-accounts.conf")).unwrap();
        std::fs::write(conf.join("tgingest-accounts.conf"), edit(accounts)).unwrap();

        let ca = TestCa::new("nats");
        let (cert, key) = ca.write_server(dir.path(), "nats");
        let (ingest, reader) = (KeyPair::new_user(), KeyPair::new_user());
        let mut options = ServerOptions::new(binary(), store, "secure");
        options.config_file = Some(conf.join("nats-server.conf"));
        options.monitoring = true;
        options.env = vec![
            (
                "NATS_JS_KEY".into(),
                hex::encode(rand::random::<[u8; 16]>()),
            ),
            ("NATS_TLS_CERT".into(), cert.display().to_string()),
            ("NATS_TLS_KEY".into(), key.display().to_string()),
            ("TGINGEST_INGEST_NKEY".into(), ingest.public_key()),
            ("TGINGEST_REPLAY_NKEY".into(), reader.public_key()),
        ];
        let server = NatsServer::start(options).expect("start nats-server from the shipped config");
        SecureNats {
            server,
            ca,
            ingest,
            reader,
            dir,
        }
    }

    /// Writes `user`'s seed to a file of mode 0600 named `name`.
    fn seed_file(&self, user: &KeyPair, name: &str) -> PathBuf {
        write_private(&self.dir.path().join(name), &user.seed().unwrap())
    }

    /// The CA that signed the server's certificate, as a file.
    fn ca_file(&self) -> PathBuf {
        self.ca.write_ca(self.dir.path(), "nats")
    }

    /// The server's log so far.
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server/nats-server.log")).unwrap_or_default()
    }

    /// The link settings of a client that is `user` and trusts `ca_file`.
    fn link(&self, seed_file: &Path, ca_file: &Path) -> NatsConfig {
        let mut nats = NatsConfig {
            url: self.server.url(),
            nkey_file: seed_file.to_path_buf(),
            ..NatsConfig::default()
        };
        nats.tls.required = true;
        nats.tls.ca_file = ca_file.to_path_buf();
        nats
    }
}

fn write_private(path: &Path, text: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path.to_path_buf()
}

/// A `tgingest` command reaching NATS through `link`, with its own data dir and master key.
fn tgingest(dir: &Path, link: &NatsConfig) -> Command {
    let key = dir.join("master.key");
    if !key.exists() {
        MasterKey::generate_file(&key).unwrap();
    }
    let mut cmd = tgingest_cmd(&dir.join("data"));
    cmd.env("TGINGEST_NODE_ID", NODE_ID)
        .env("TGINGEST_MASTER_KEY_FILE", &key)
        .env("TGINGEST_NATS_URL", &link.url)
        .env("TGINGEST_NATS_TLS_REQUIRED", link.tls.required.to_string())
        .env("TGINGEST_NATS_TLS_CA_FILE", &link.tls.ca_file)
        .env("TGINGEST_NATS_NKEY_FILE", &link.nkey_file)
        .env("TGINGEST_NATS_CREDENTIALS_FILE", &link.credentials_file)
        .env("TGINGEST_NATS_REQUEST_TIMEOUT", "30s");
    cmd
}

/// Runs `tgingest run` through `link`, expecting it to refuse to start.
fn run_refused(dir: &Path, link: &NatsConfig) -> Output {
    let mut child = tgingest(dir, link)
        .env("SWITCHBOARD_MCP_URL", "http://127.0.0.1:9/mcp")
        .arg("run")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_exit(&mut child, WAIT);
    let mut stderr = Vec::new();
    if let Some(mut pipe) = child.stderr.take() {
        std::io::Read::read_to_end(&mut pipe, &mut stderr).unwrap();
    }
    Output {
        status,
        stdout: Vec::new(),
        stderr,
    }
}

/// A `tgingest run` process, killed when dropped (a failing test leaves none behind).
struct RunningNode(Child);

impl Drop for RunningNode {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl RunningNode {
    fn id(&self) -> u32 {
        self.0.id()
    }
}

/// Starts `tgingest run` from `cmd`, delivering to `fake`, its admin API on `admin`, its log
/// going to `log`.
fn spawn_run(cmd: &mut Command, fake: &FakeSwitchboard, admin: &str, log: &Path) -> RunningNode {
    let child = cmd
        .env("SWITCHBOARD_MCP_URL", fake.mcp_url())
        .env("TGINGEST_ADMIN_LISTEN", admin)
        .arg("run")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    RunningNode(child)
}

/// Stops a node with SIGTERM; it must exit 0.
fn stop(node: &mut RunningNode, log: &Path) {
    signal(node.id(), libc::SIGTERM);
    let status = wait_exit(&mut node.0, WAIT);
    assert!(
        status.success(),
        "node exit {status}; log:\n{}",
        node_log(log)
    );
}

fn node_log(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_runs_the_pipeline_and_a_replay_through_tls_and_the_shipped_layout_without_a_refused_subject()
 {
    tgingest::telemetry::install_crypto_provider();
    let nats = SecureNats::start(|accounts| accounts);
    let fake = FakeSwitchboard::start(FakeOptions::default())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = nats.ca_file();
    let node_link = nats.link(&nats.seed_file(&nats.ingest, "ingest.nk"), &ca_file);
    let sim = SimulatorConfig {
        accounts: 2,
        rate: 200.0,
        messages_per_account: 150,
        seed: 16,
        ..SimulatorConfig::default()
    };
    let policy = tgingest::policy::Policy::new(&Default::default()).unwrap();
    let world = SimulatedWorld::new(sim.clone()).unwrap();
    let expected: HashSet<String> =
        tgingest::demo::expected_after_policy(&world, &policy, sim.messages_per_account)
            .map(|e| e.event_id)
            .collect();

    let admin = format!("127.0.0.1:{}", free_port());
    let log_path = dir.path().join("node.log");
    let mut cmd = tgingest(dir.path(), &node_link);
    simulate(&mut cmd, &sim).env("TGINGEST_SWITCHBOARD_HEARTBEAT_INTERVAL", "0s");
    let mut node = spawn_run(&mut cmd, &fake, &admin, &log_path);
    wait_until(WAIT, || {
        fake.stored_event_ids().is_superset(&expected) || !support::process_alive(node.id())
    });
    assert!(
        fake.stored_event_ids().is_superset(&expected),
        "{} of {} events delivered; node log:\n{}\nserver log:\n{}",
        fake.stored_event_ids().len(),
        expected.len(),
        node_log(&log_path),
        nats.log()
    );

    // A replay runs in the node, as the ingest user: an ordered consumer on TG_CLEAN.
    fake.forget_all();
    let replay = tgingest(dir.path(), &node_link)
        .args(["replay", "--from-sequence", "1", "--admin-url"])
        .arg(format!("http://{admin}"))
        .output()
        .unwrap();
    assert_eq!(
        replay.status.code(),
        Some(0),
        "replay: {}\nnode log:\n{}",
        stderr(&replay),
        node_log(&log_path)
    );
    assert!(
        fake.stored_event_ids().is_superset(&expected),
        "the replay did not re-deliver everything"
    );
    stop(&mut node, &log_path);

    // The production shape: cluster on (simulated accounts cannot be shared, so none run):
    // membership, leases, the controller's watch, the shared seen-set's bucket.
    let log_path = dir.path().join("cluster-node.log");
    let mut cmd = tgingest(dir.path(), &node_link);
    cmd.env("TGINGEST_CLUSTER_ENABLED", "true");
    let mut node = spawn_run(&mut cmd, &fake, &admin, &log_path);
    let member = wait_until(WAIT, || {
        let status = tgingest(dir.path(), &node_link)
            .args(["cluster", "status", "--json", "--admin-url"])
            .arg(format!("http://{admin}"))
            .output()
            .unwrap();
        let said: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap_or_default();
        let listed = said["nodes"]
            .as_array()
            .is_some_and(|nodes| nodes.iter().any(|n| n["node"] == NODE_ID));
        listed || !support::process_alive(node.id())
    });
    assert!(
        member && support::process_alive(node.id()),
        "cluster node: {}",
        node_log(&log_path)
    );
    stop(&mut node, &log_path);

    // The read-only user verifies the node's audit copy from TG_AUDIT.
    let reader_link = nats.link(&nats.seed_file(&nats.reader, "reader.nk"), &ca_file);
    let verify = tgingest(dir.path(), &reader_link)
        .args(["audit", "verify", "--node", NODE_ID])
        .output()
        .unwrap();
    assert_eq!(
        verify.status.code(),
        Some(0),
        "audit verify --node as the read-only user: {}{}",
        String::from_utf8_lossy(&verify.stdout),
        stderr(&verify)
    );

    // Nothing the node or the tool did was refused: the layout misses no grant they use.
    let log = nats.log();
    assert!(
        !log.contains("Violation"),
        "the shipped layout refused a subject:\n{log}"
    );

    // The read-only user may not write to a stream.
    let bus = Bus::connect(&reader_link.url, &reader_link, "reader-probe")
        .await
        .expect("the read-only user connects");
    let write = bus
        .guarded(async {
            bus.publish_acked("tg.clean.1".into(), "probe-1".into(), "x".into())
                .await
                .map_err(|e| BusError::Connect {
                    url: String::new(),
                    message: e.to_string(),
                })
        })
        .await;
    match write {
        Err(BusError::PermissionDenied {
            operation, subject, ..
        }) => assert_eq!((operation, subject.as_str()), ("publish to", "tg.clean.1")),
        other => panic!("the read-only user wrote to TG_CLEAN: {other:?}"),
    }
    bus.client.drain().await.ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_a_wrong_ca_and_a_missing_publish_grant_each_stop_the_start_with_exit_2()
{
    tgingest::telemetry::install_crypto_provider();
    // The shipped layout, less the node's grant on the dead-letter subjects.
    let nats = SecureNats::start(|accounts| {
        assert!(accounts.contains(r#""tg.dlq.>", "#));
        accounts.replace(r#""tg.dlq.>", "#, "")
    });
    let dir = tempfile::tempdir().unwrap();
    let ca_file = nats.ca_file();
    let ingest_seed = nats.seed_file(&nats.ingest, "ingest.nk");

    let stranger = KeyPair::new_user();
    let link = nats.link(&nats.seed_file(&stranger, "stranger.nk"), &ca_file);
    let out = run_refused(dir.path(), &link);
    let said = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "unknown user: {said}");
    assert!(
        said.contains("refused the credentials")
            && said.contains("nats.nkey_file")
            && said.contains(&stranger.public_key()),
        "unknown user: {said}"
    );

    let other_ca = TestCa::new("other").write_ca(dir.path(), "other");
    let out = run_refused(dir.path(), &nats.link(&ingest_seed, &other_ca));
    let said = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "wrong CA: {said}");
    assert!(
        said.contains("does not verify")
            && said.contains("UnknownIssuer")
            && said.contains("nats.tls.ca_file"),
        "wrong CA: {said}"
    );

    let out = run_refused(dir.path(), &nats.link(&ingest_seed, &ca_file));
    let said = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "missing grant: {said}");
    assert!(
        said.contains(r#"does not let this user publish to "tg.dlq.0""#)
            && said.contains("tgingest-accounts.conf"),
        "missing grant: {said}"
    );

    let mut link = nats.link(Path::new(""), &ca_file);
    link.credentials_file = write_private(&dir.path().join("bad.creds"), "not a creds file\n");
    let out = run_refused(dir.path(), &link);
    let said = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "bad .creds: {said}");
    assert!(
        said.contains("cannot use NATS credentials file") && said.contains("bad.creds"),
        "bad .creds: {said}"
    );

    // Not a configuration problem: nothing listens there (yet).
    let mut link = nats.link(&ingest_seed, &ca_file);
    link.url = format!("nats://127.0.0.1:{}", free_port());
    let out = run_refused(dir.path(), &link);
    let said = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "no server: {said}");
    assert!(said.contains("cannot connect to NATS"), "no server: {said}");
}
