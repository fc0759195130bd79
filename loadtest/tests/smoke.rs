//! The smoke scenario, end to end, as CI runs it: a real nats-server, a real `tgingest run`
//! process (the debug binary beside this package's), the fake Switchboard; the only assertion
//! is the loose one: nothing lost, nothing stored twice, nothing unexpected. Timings are
//! reported, never asserted.

use std::path::Path;
use std::process::Command;

/// Runs `scenario` with its report into `out`; panics with both outputs and tgingest's log unless
/// the run succeeded; returns report.json and stdout.
fn run_ok(scenario: &Path, out: &Path) -> (serde_json::Value, String) {
    let run = Command::new(env!("CARGO_BIN_EXE_tgingest-loadtest"))
        .args(["run", "--quiet", "--out"])
        .arg(out)
        .arg(scenario)
        .output()
        .expect("run tgingest-loadtest");
    let stdout = String::from_utf8_lossy(&run.stdout).to_string();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        run.status.success(),
        "{} failed ({}):\n{stdout}\n{stderr}\n(tgingest log: {})",
        scenario.display(),
        run.status,
        std::fs::read_to_string(out.join("tgingest.log")).unwrap_or_default()
    );
    let report = serde_json::from_str(
        &std::fs::read_to_string(out.join("report.json")).expect("report.json"),
    )
    .expect("report.json is JSON");
    (report, stdout)
}

#[test]
fn smoke_scenario_loses_nothing_and_stores_nothing_twice() {
    let out = tempfile::tempdir().expect("temp dir");
    let scenario = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/smoke.toml");
    let (report, stdout) = run_ok(&scenario, out.path());
    let d = &report["delivery"];
    assert!(d["expected"].as_u64().unwrap_or(0) > 0, "{d}");
    assert_eq!(d["lost"], 0, "{d}");
    assert_eq!(d["duplicates_stored"], 0, "{d}");
    assert_eq!(d["unexpected"], 0, "{d}");
    assert!(out.path().join("report.svg").is_file());
    println!("{stdout}");
}

/// The smoke run measures the floor before tgingest starts and reports tgingest's rate against
/// it (report.json, the summary, report.svg's title), and the fake Switchboard runs in a process
/// of its own whose CPU is reported apart from the driver's.
#[test]
fn smoke_report_gives_the_floor_and_the_cpu_of_each_process() {
    let out = tempfile::tempdir().expect("temp dir");
    let scenario = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/smoke.toml");
    let (report, stdout) = run_ok(&scenario, out.path());
    let floor = &report["floor"];
    assert!(
        floor["live"]["events_per_s"].as_f64().unwrap_or(0.0) > 0.0,
        "{floor}"
    );
    assert_eq!(floor["live"]["not_accepted"], 0, "{floor}");
    assert!(
        floor["settings"]["max_inflight"].as_u64().unwrap_or(0) >= 1,
        "{floor}"
    );
    let ratio = report["floor_ratio"]["ratio"].as_f64().unwrap_or(0.0);
    assert!(ratio > 0.0, "{}", report["floor_ratio"]);
    assert!(stdout.contains("x floor"), "{stdout}");
    let svg = std::fs::read_to_string(out.path().join("report.svg")).expect("report.svg");
    assert!(
        svg.contains("x floor"),
        "the SVG title names the floor ratio"
    );
    let cpu = &report["resources"]["neighbours"];
    assert!(
        cpu["fake_switchboard_cpu_s"].as_f64().unwrap_or(0.0) > 0.0,
        "{cpu}"
    );
    assert!(cpu["driver_cpu_s"].as_f64().is_some(), "{cpu}");
    // The floor's events are gone from the fake before tgingest starts: it stored tgingest's only.
    assert_eq!(
        report["switchboard"]["stored"],
        report["delivery"]["expected"]
    );
}

#[test]
fn a_recorded_capture_source_says_what_is_missing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let scenario = dir.path().join("capture.toml");
    std::fs::write(
        &scenario,
        "name = \"capture\"\nsource = \"replay\"\nduration = \"5s\"\n[simulator]\naccounts = 1\n",
    )
    .expect("scenario");
    let run = Command::new(env!("CARGO_BIN_EXE_tgingest-loadtest"))
        .args(["run", "--quiet", "--out"])
        .arg(dir.path().join("out"))
        .arg(&scenario)
        .output()
        .expect("run tgingest-loadtest");
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("not available yet") && stderr.contains("[replay] enabled = true"),
        "{stderr}"
    );
}

/// A short run with the replay phase: after the drain the fake forgets everything, tgingest
/// replays TG_CLEAN, and every event is stored exactly once again.
#[test]
fn the_replay_phase_stores_every_event_exactly_once_again() {
    let dir = tempfile::tempdir().expect("temp dir");
    let scenario = dir.path().join("replay-small.toml");
    std::fs::write(
        &scenario,
        r#"
name = "replay-small"
source = "simulated"
duration = "3s"
warmup = "1s"
drain_timeout = "30s"
[simulator]
accounts = 3
rate = 20.0
[replay]
enabled = true
timeout = "60s"
[ceiling]
messages = 0
[floor]
duration = "2s"
warmup = "500ms"
"#,
    )
    .expect("scenario");
    let (report, stdout) = run_ok(&scenario, &dir.path().join("out"));
    let expected = report["delivery"]["expected"].as_u64().unwrap_or(0);
    let r = &report["replay"];
    assert!(expected > 0, "{report}");
    assert_eq!(r["progress"]["state"], "finished", "{r}");
    assert_eq!(r["stored"], expected, "{r}");
    assert_eq!(r["progress"]["accepted"], expected, "{r}");
    assert_eq!(r["lost"], 0, "{r}");
    assert_eq!(r["duplicates_stored"], 0, "{r}");
    assert_eq!(r["unexpected"], 0, "{r}");
    assert!(r["throughput_per_s"].as_f64().unwrap_or(0.0) > 0.0, "{r}");
    // The replay floor ran after the live floor, and the replay is reported against it.
    let replay_floor = &report["floor"]["replay"];
    assert!(
        replay_floor["events_per_s"].as_f64().unwrap_or(0.0) > 0.0,
        "{replay_floor}"
    );
    assert!(
        r["floor_ratio"]["ratio"].as_f64().unwrap_or(0.0) > 0.0,
        "{r}"
    );
    println!("{stdout}");
}

/// Five real grammers clients against the fake DC for five seconds: imported and consented
/// through the admin API, nothing lost, nothing stored twice, nothing unexpected.
#[test]
fn fake_dc_clients_lose_nothing_and_store_nothing_twice() {
    let dir = tempfile::tempdir().expect("temp dir");
    let scenario = dir.path().join("fake-dc-small.toml");
    std::fs::write(
        &scenario,
        r#"
name = "fake-dc-small"
source = "fake-dc"
duration = "5s"
warmup = "1s"
drain_timeout = "60s"
[simulator]
accounts = 5
rate = 2.0
[ceiling]
messages = 0
[floor]
duration = "0s"
"#,
    )
    .expect("scenario");
    let (report, stdout) = run_ok(&scenario, &dir.path().join("out"));
    let d = &report["delivery"];
    // 5 accounts x 2 msg/s x 5 s, most messages seen by all five accounts of the cohort.
    assert!(d["expected"].as_u64().unwrap_or(0) >= 40, "{d}");
    assert_eq!(d["lost"], 0, "{d}");
    assert_eq!(d["duplicates_stored"], 0, "{d}");
    assert_eq!(d["unexpected"], 0, "{d}");
    assert!(report["setup"]["setup_s"].as_f64().is_some(), "{report}");
    // The fake DC ran in a process of its own, its CPU reported apart.
    let cpu = &report["resources"]["neighbours"];
    assert!(cpu["fake_dc_cpu_s"].as_f64().unwrap_or(0.0) > 0.0, "{cpu}");
    println!("{stdout}");
}

#[test]
fn every_shipped_scenario_parses() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    let files: Vec<_> = std::fs::read_dir(&dir)
        .expect("scenarios dir")
        .map(|e| e.expect("entry").path())
        .collect();
    assert!(files.len() >= 7, "{files:?}");
    let run = Command::new(env!("CARGO_BIN_EXE_tgingest-loadtest"))
        .arg("check")
        .args(&files)
        .output()
        .expect("run tgingest-loadtest check");
    assert!(
        run.status.success(),
        "{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
}
