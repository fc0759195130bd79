//! Message texts stay out of the logs: the real binary runs the fake-DC demo (grammers clients
//! against the fake Telegram DC, the whole pipeline, the fake Switchboard) at `RUST_LOG=trace`,
//! and every text the demo sent ("demo message N") is looked for in what it logged. Without
//! `logging.bodies` none may appear; with it they appear, and only in `debug` or `trace` lines
//! (which also shows that the canary sees a text when one is logged).

mod support;

use serde_json::Value;
use support::tgingest_cmd;

/// What every message the fake-DC demo sends starts with.
const SENT_TEXT: &str = "demo message ";

/// Runs a short fake-DC demo at `RUST_LOG=trace` with JSON log lines; returns the summary and
/// the log lines, parsed.
fn demo_at_trace(bodies: bool) -> (Value, Vec<Value>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut cmd = tgingest_cmd(dir.path());
    cmd.env("RUST_LOG", "trace")
        .env("TGINGEST_LOGGING_BODIES", bodies.to_string())
        .args([
            "--log-format",
            "json",
            "demo",
            "--json",
            "--source",
            "fake-dc",
        ])
        .args(["--accounts", "2", "--rate", "2", "--duration", "2s"])
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
