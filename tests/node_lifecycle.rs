//! A whole node through the real binary: start, stop on a signal, die by `kill -9`, verify its log.

mod support;

use std::process::{Child, Stdio};
use std::time::Duration;

use support::{
    catches_signal, children_of, nats_servers_under, process_alive, signal, simulate, spawn_run,
    tgingest_cmd, wait_exit, wait_until,
};

/// Starts `tgingest run` and waits for its embedded nats-server; returns both.
fn start_node(data_dir: &std::path::Path) -> (Child, u32) {
    let log_path = data_dir.join("stderr.log");
    let child = spawn_run(data_dir, &log_path);
    let pid = child.id();
    let mut nats_pid = None;
    let found = wait_until(Duration::from_secs(30), || {
        nats_pid = children_of(pid)
            .into_iter()
            .find(|(_, comm)| comm == "nats-server")
            .map(|(p, _)| p);
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        nats_pid.is_some() && log.contains("node running")
    });
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    assert!(found, "tgingest run did not come up; its log:\n{log}");
    (child, nats_pid.unwrap_or_default())
}

fn verify(data_dir: &std::path::Path, anchored: bool) -> (Option<i32>, serde_json::Value) {
    let mut cmd = tgingest_cmd(data_dir);
    cmd.args(["audit", "verify"]);
    if anchored {
        cmd.arg("--anchored");
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let json = serde_json::from_str(stdout.trim()).unwrap_or_else(|_| {
        panic!(
            "not JSON: {stdout} / {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code(), json)
}

#[test]
fn sigterm_stops_the_node_and_its_nats_server_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, nats_pid) = start_node(dir.path());
    signal(child.id(), libc::SIGTERM);
    let status = child.wait().unwrap();
    assert!(status.success(), "exit status {status}");
    assert!(
        !process_alive(nats_pid),
        "embedded nats-server {nats_pid} survived"
    );

    let (code, report) = verify(dir.path(), false);
    assert_eq!(code, Some(0), "{report}");
    assert_eq!(report["ok"], true);
    assert!(
        report["verified"].as_u64().unwrap() >= 2,
        "node.start and node.stop: {report}"
    );
    let (code, report) = verify(dir.path(), true);
    assert_eq!(code, Some(0), "anchored: {report}");
    assert!(
        dir.path().join("master.key").exists(),
        "the embedded default generates a key"
    );
}

#[test]
fn kill_9_of_tgingest_leaves_no_nats_server_behind() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, nats_pid) = start_node(dir.path());
    assert!(process_alive(nats_pid));
    child.kill().unwrap(); // SIGKILL: no destructor runs in tgingest
    child.wait().unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || !process_alive(nats_pid)),
        "nats-server {nats_pid} outlived its parent"
    );
    // The log written before the kill still verifies, and a restart on the same dir works.
    let (code, report) = verify(dir.path(), false);
    assert_eq!(code, Some(0), "{report}");
}

#[test]
fn demo_delivers_everything_once_and_stops_its_embedded_nats() {
    let dir = tempfile::tempdir().unwrap();
    let out = tgingest_cmd(dir.path())
        .args([
            "demo",
            "--json",
            "--accounts",
            "2",
            "--rate",
            "50",
            "--duration",
            "2s",
            "--data-dir",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["lost"], 0, "{summary}");
    assert_eq!(summary["duplicates_delivered"], 0, "{summary}");
    assert_eq!(summary["unexpected"], 0, "{summary}");
    assert_eq!(summary["delivered"], summary["expected"], "{summary}");
    assert!(summary["expected"].as_u64().unwrap() > 150, "{summary}");
    assert_eq!(summary["eventlog_ok"], true);
    let url = summary["nats_url"].as_str().unwrap().to_string();
    let port: u16 = url.rsplit(':').next().unwrap().parse().unwrap();
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the demo's nats-server at {url} is still listening"
    );
}

#[test]
fn audit_verify_without_a_log_or_key_explains_itself() {
    let dir = tempfile::tempdir().unwrap();
    let out = tgingest_cmd(dir.path())
        .args(["audit", "verify"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("master key") || stderr.contains("no event log"),
        "{stderr}"
    );
}

/// What an attacker with the node's disk (but not the master key's other copies in JetStream)
/// can do: cut the newest record off and rewrite the local head to match. The local chain still
/// verifies; only the anchor in JetStream tells.
#[test]
fn a_truncated_log_with_a_rewritten_head_is_caught_only_by_the_anchor() {
    use tgingest::eventlog::{Anchor, Record};
    let dir = tempfile::tempdir().unwrap();
    let (mut child, _) = start_node(dir.path());
    signal(child.id(), libc::SIGTERM);
    assert!(child.wait().unwrap().success());

    {
        let db = sled::open(dir.path().join("eventlog")).unwrap();
        let log = db.open_tree("log").unwrap();
        let meta = db.open_tree("meta").unwrap();
        let (last_key, _) = log.last().unwrap().unwrap();
        log.remove(&last_key).unwrap();
        let (_, value) = log.last().unwrap().unwrap();
        let new_head: Record = tgingest::codec::decode(&value).unwrap();
        let head = Anchor {
            seq: new_head.seq,
            hash: new_head.hash,
        };
        meta.insert("head", tgingest::codec::encode(&head).unwrap())
            .unwrap();
        db.flush().unwrap();
    }

    let (code, report) = verify(dir.path(), false);
    assert_eq!(code, Some(0), "the local chain alone cannot tell: {report}");
    let (code, report) = verify(dir.path(), true);
    assert_eq!(code, Some(1), "{report}");
    assert_eq!(report["ok"], false);
    assert!(
        report["reason"].as_str().unwrap().contains("truncated"),
        "{report}"
    );
}

/// A point of start-up, told by what the node shows: its pid and its log so far.
type StartupPoint = (&'static str, fn(u32, &str) -> bool);

#[test]
fn sigterm_at_any_point_of_start_up_stops_the_node_cleanly() {
    let points: [StartupPoint; 5] = [
        ("handlers installed", |pid, _| {
            catches_signal(pid, libc::SIGTERM)
        }),
        ("nats-server child running", |pid, _| {
            children_of(pid)
                .iter()
                .any(|(_, comm)| comm == "nats-server")
        }),
        ("NATS connected", |_, log| log.contains("NATS connected")),
        ("bus set up", |_, log| log.contains("bus set-up")),
        ("accounts started", |_, log| {
            log.contains("registry accounts started")
        }),
    ];
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("stderr.log");
    for (point, reached) in points {
        let mut child = spawn_run(dir.path(), &log_path);
        let pid = child.id();
        let seen = wait_until(Duration::from_secs(30), || {
            reached(pid, &std::fs::read_to_string(&log_path).unwrap_or_default())
        });
        assert!(seen, "start-up never reached {point}");
        signal(pid, libc::SIGTERM);
        let status = wait_exit(&mut child, Duration::from_secs(30));
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        assert!(
            status.success(),
            "SIGTERM when {point}: exit status {status}; log:\n{log}"
        );
        assert!(
            wait_until(Duration::from_secs(5), || nats_servers_under(dir.path())
                .is_empty()),
            "SIGTERM when {point}: a nats-server was left behind"
        );
    }
    // Nothing was left half-written: the node starts on the same data, and its log verifies.
    let (mut child, _) = start_node(dir.path());
    signal(child.id(), libc::SIGTERM);
    assert!(child.wait().unwrap().success());
    let (code, report) = verify(dir.path(), true);
    assert_eq!(code, Some(0), "{report}");
}

/// `tgingest run` on the embedded default with simulated accounts delivering to `fake`, in a
/// process group of its own, as a shell starts a foreground job.
fn start_producing_node(
    dir: &std::path::Path,
    fake: &tgingest::switchboard::FakeSwitchboard,
    sim: &tgingest::telegram::simulated::SimulatorConfig,
    log: &std::path::Path,
) -> Child {
    use std::os::unix::process::CommandExt;
    let mut cmd = tgingest_cmd(dir);
    simulate(&mut cmd, sim)
        .env("SWITCHBOARD_MCP_URL", fake.mcp_url())
        .env("TGINGEST_SWITCHBOARD_HEARTBEAT_INTERVAL", "0s")
        .arg("run")
        .process_group(0)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .expect("spawn tgingest run")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_to_the_process_group_drains_the_node_before_its_nats_server_stops() {
    use tgingest::switchboard::{FakeOptions, FakeSwitchboard};
    use tgingest::telegram::simulated::{SimulatedWorld, SimulatorConfig};
    tgingest::telemetry::install_crypto_provider();
    let fake = FakeSwitchboard::start(FakeOptions::default())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sim = SimulatorConfig {
        accounts: 2,
        rate: 300.0,
        messages_per_account: 1500,
        seed: 5,
        ..SimulatorConfig::default()
    };
    let policy = tgingest::policy::Policy::new(&Default::default()).unwrap();
    let world = SimulatedWorld::new(sim.clone()).unwrap();
    let expected: std::collections::HashSet<String> =
        tgingest::demo::expected_after_policy(&world, &policy, sim.messages_per_account)
            .map(|e| e.event_id)
            .collect();

    let log_path = dir.path().join("first.log");
    let mut child = start_producing_node(dir.path(), &fake, &sim, &log_path);
    let mid_stream = wait_until(Duration::from_secs(60), || {
        fake.stats().stored as usize >= expected.len() / 5
    });
    assert!(mid_stream, "the pipeline did not get going");
    // What a terminal does on Ctrl-C: SIGINT to every process of the foreground group.
    // SAFETY: kill(2) on the process group of a child this test started.
    unsafe { libc::kill(-(child.id() as i32), libc::SIGINT) };
    let status = wait_exit(&mut child, Duration::from_secs(60));
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    assert!(status.success(), "exit status {status}; log:\n{log}");
    assert!(
        !log.contains("restarting") && !log.contains("NATS connection lost"),
        "the nats-server went before the node had drained:\n{log}"
    );

    // The rest arrives after a restart, and nothing is lost or stored twice.
    let log_path = dir.path().join("second.log");
    let mut child = start_producing_node(dir.path(), &fake, &sim, &log_path);
    let all = wait_until(Duration::from_secs(120), || {
        fake.stored_event_ids().is_superset(&expected)
    });
    signal(child.id(), libc::SIGTERM);
    let status = wait_exit(&mut child, Duration::from_secs(60));
    assert!(all, "not every event arrived");
    assert!(status.success(), "second run: exit status {status}");
    let got = fake.stored_event_ids();
    assert_eq!(expected.difference(&got).count(), 0, "events lost");
    assert_eq!(got.difference(&expected).count(), 0, "unexpected events");
    assert_eq!(fake.stored_twice(), 0, "an event was stored twice");
}
