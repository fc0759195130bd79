//! `tgingest demo --switchboard-url` against an external Switchboard, through the real binary:
//! the verdict comes from what the server acknowledged event by event, so a server that is
//! unreachable, rejects everything or never acknowledges makes the demo exit 1 saying how many
//! events were not acknowledged; and the fake-DC demo waits for its deliveries before it stops.
//! The "external" server is the fake Switchboard run by the test on its own port.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::tgingest_cmd;
use tgingest::switchboard::{FakeOptions, FakeSwitchboard, Faults};

/// Runs `tgingest demo --json` with `args` against `url`; returns the exit code, the summary and
/// the stderr (for failure messages).
async fn demo(url: &str, args: &[&str]) -> (Option<i32>, Value, String) {
    demo_with(url, args, &[]).await
}

/// [`demo`] with extra environment variables.
async fn demo_with(url: &str, args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, Value, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut cmd = tgingest_cmd(dir.path());
    cmd.envs(env.iter().copied())
        .args(["demo", "--json", "--switchboard-url", url, "--data-dir"])
        .arg(dir.path())
        .args(args);
    let out = tokio::process::Command::from(cmd)
        .kill_on_drop(true)
        .output()
        .await
        .expect("run tgingest demo");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let summary = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("no JSON summary ({e}); stderr:\n{stderr}"));
    (out.status.code(), summary, stderr)
}

/// A short simulated run: a few dozen expected events, a short drain wait.
const SHORT: &[&str] = &[
    "--accounts",
    "2",
    "--rate",
    "10",
    "--duration",
    "1s",
    "--drain-timeout",
    "3s",
];

/// Exit 1, and the summary says every expected event went unacknowledged.
fn assert_nothing_acknowledged(code: Option<i32>, summary: &Value, stderr: &str) {
    let expected = summary["expected"].as_u64().expect("expected");
    assert!(expected > 0, "{summary}");
    assert_eq!(code, Some(1), "{summary}\n{stderr}");
    assert_eq!(summary["not_acknowledged"], expected, "{summary}");
    assert_eq!(summary["delivered"], 0, "{summary}");
    assert_eq!(summary["drained"], false, "{summary}");
}

/// A short demo against a fake Switchboard set up by `refuse` to store nothing: it must exit 1
/// with nothing acknowledged. Returns the summary.
async fn demo_against_a_refusing_switchboard(refuse: impl FnOnce(&FakeSwitchboard)) -> Value {
    let fake = FakeSwitchboard::start(FakeOptions::default())
        .await
        .expect("fake switchboard");
    refuse(&fake);
    let (code, summary, stderr) = demo(&fake.mcp_url(), SHORT).await;
    assert_nothing_acknowledged(code, &summary, &stderr);
    assert!(fake.accepted().is_empty());
    fake.stop().await;
    summary
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_against_a_port_nobody_listens_on_exits_1_counting_what_was_not_acknowledged() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    };
    let url = format!("http://127.0.0.1:{port}/mcp");
    let (code, summary, stderr) = demo(&url, SHORT).await;
    assert_nothing_acknowledged(code, &summary, &stderr);
    assert!(summary["retries"].as_u64().unwrap_or(0) > 0, "{summary}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_against_a_switchboard_that_rejects_every_envelope_exits_1() {
    // A server of another version: every envelope's channel is refused for good.
    let summary =
        demo_against_a_refusing_switchboard(|f| f.set_channels(vec!["telegram".into()])).await;
    assert_eq!(
        summary["dead_lettered"], summary["expected"],
        "every envelope was refused and parked: {summary}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_against_a_switchboard_that_never_acknowledges_exits_1() {
    // Every tool call answers `isError: true` (a database outage): retried, never settled.
    let summary = demo_against_a_refusing_switchboard(|f| {
        f.set_faults(Faults {
            tool_error_probability: 1.0,
            ..Faults::default()
        })
    })
    .await;
    assert!(
        summary["pending_at_stop"].as_u64().unwrap_or(0) > 0,
        "the unsettled events are reported as pending: {summary}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fake_dc_demo_against_an_external_switchboard_waits_for_every_delivery() {
    let fake = FakeSwitchboard::start(FakeOptions::default())
        .await
        .expect("fake switchboard");
    // A slow server: the deliveries run well past the end of sending.
    fake.set_latency(Duration::from_millis(700));
    let (code, summary, stderr) = demo(
        &fake.mcp_url(),
        &[
            "--source",
            "fake-dc",
            "--accounts",
            "2",
            "--rate",
            "5",
            "--duration",
            "2s",
            "--drain-timeout",
            "60s",
        ],
    )
    .await;
    assert_eq!(code, Some(0), "{summary}\n{stderr}");
    let expected = summary["expected"].as_u64().expect("expected");
    assert!(expected > 10, "{summary}");
    // Everything reached the server before the node stopped, once each.
    assert_eq!(fake.stored_event_ids().len() as u64, expected, "{summary}");
    assert_eq!(fake.stored_twice(), 0);
    assert_eq!(summary["delivered"], expected, "{summary}");
    // Throughput is the node's own count, not the built-in fake's.
    assert!(
        summary["throughput_per_s"].as_f64().unwrap_or(0.0) > 0.0,
        "{summary}"
    );
    assert_eq!(summary["not_acknowledged"], 0, "{summary}");
    assert_eq!(summary["pending_at_stop"], 0, "{summary}");
    assert_eq!(summary["drained"], true, "{summary}");
    fake.stop().await;
}

/// The demo in batch mode: every event acknowledged (new messages inside batches), and far fewer
/// `ingest` calls than events, side by side in the summary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_in_batch_mode_counts_events_and_ingest_calls_side_by_side() {
    let fake = FakeSwitchboard::start(FakeOptions::default())
        .await
        .expect("fake switchboard");
    let env = [
        ("TGINGEST_SWITCHBOARD_MODE", "conversation_batches"),
        ("TELEGRAM_USER_FLUSH_INTERVAL_S", "1"),
    ];
    let args = ["--accounts", "2", "--rate", "50", "--duration", "2s"];
    let (code, summary, stderr) = demo_with(&fake.mcp_url(), &args, &env).await;
    assert_eq!(code, Some(0), "{summary}\n{stderr}");
    assert_eq!(summary["mode"], "conversation_batches", "{summary}");
    let expected = summary["expected"].as_u64().expect("expected");
    assert_eq!(summary["delivered"], expected, "{summary}");
    assert_eq!(fake.stored_event_ids().len() as u64, expected, "{summary}");
    assert_eq!(fake.stored_twice(), 0);
    let calls = summary["ingest_calls"].as_u64().expect("ingest_calls");
    assert!(summary["batches"].as_u64().unwrap_or(0) > 0, "{summary}");
    assert!(calls > 0 && calls < expected / 2, "{summary}");
    assert!(
        summary["ingest_calls_per_s"].as_f64().unwrap_or(0.0) > 0.0,
        "{summary}"
    );
    fake.stop().await;
}
