//! The replay phase (`[replay] enabled = true`): once the run has drained, the fake Switchboard
//! forgets everything (a Switchboard restored from an empty backup), a replay of all of
//! `TG_CLEAN` is started through tgingest's admin API (`POST /v1/replays`, as `tgingest replay`
//! does), and when it has finished what the fake stored is compared with the ground truth again,
//! event by event.
//!
//! Throughput is events stored again per second, from the `POST` to the last arrival. Latency is
//! not measured: a replay re-sends old events, so source → stored time says nothing about it.

use std::time::{Duration, Instant};

use crate::admin;
use crate::analysis::analyze;
use crate::floor::FloorRatio;
use crate::procs::{Tgingest, proc_sample};
use crate::remote_switchboard::RemoteSwitchboard;
use crate::stage::Yardsticks;
use crate::truth::Truth;
use anyhow::{Context, bail};
use serde::Serialize;
use tgingest::pipeline::replay::{ReplayProgress, ReplayState};

/// How often the replay's progress is read.
const POLL_EVERY: Duration = Duration::from_millis(100);

/// The replay figures of a run (`replay` in report.json).
#[derive(Debug, Clone, Serialize)]
pub struct ReplayFigures {
    /// tgingest's own account of the replay (`GET /v1/replays/{id}` at the end).
    pub progress: ReplayProgress,
    /// `POST /v1/replays` → the replay seen finished, seconds.
    pub wall_s: f64,
    /// Envelopes the fake stored during the replay.
    pub stored: u64,
    /// Events stored again per second, `POST` → last arrival.
    pub throughput_per_s: f64,
    /// throughput / the run's raw publish ceiling.
    pub ratio_to_publish_ceiling: Option<f64>,
    /// throughput / the run's raw consume ceiling (a replay is a consumer of `TG_CLEAN`).
    pub ratio_to_consume_ceiling: Option<f64>,
    /// throughput against the replay floor (ordered consume + one MCP call per event).
    pub floor_ratio: Option<FloorRatio>,
    /// CPU seconds tgingest spent on the replay.
    pub cpu_s: f64,
    /// Compared with the ground truth after the replay, event by event: all three must be 0.
    pub lost: u64,
    pub duplicates_stored: u64,
    pub unexpected: u64,
    pub lost_examples: Vec<String>,
    /// Why there is no latency figure.
    pub latency: &'static str,
    /// The replay finished and nothing was lost, stored twice or unexpected.
    pub ok: bool,
}

/// Runs the replay phase against the drained run.
pub async fn run(
    admin: admin::Target<'_>,
    proc: &mut Tgingest,
    fake: &RemoteSwitchboard,
    truth: &Truth,
    yard: &Yardsticks,
    timeout: Duration,
    say: &dyn Fn(String),
) -> anyhow::Result<ReplayFigures> {
    let ceiling = yard.ceiling.as_ref();
    let floor = yard.floor.as_ref().and_then(|f| f.replay.as_ref());
    fake.forget_all().await?;
    say(format!(
        "Switchboard forgot everything; replaying TG_CLEAN ({} events expected)",
        truth.expected.len()
    ));
    let cpu_before = proc_sample(proc.pid()).map_or(0.0, |s| s.cpu_s);
    let started = Instant::now();
    let started_us = jiff::Timestamp::now().as_microsecond();
    let (addr, token) = (admin.addr, admin.token);
    let answer = admin::post_as(addr, token, "/v1/replays", &serde_json::json!({}))
        .await
        .context("start the replay")?;
    let progress: ReplayProgress =
        serde_json::from_str(&answer).context("the replay's start answer")?;
    let path = format!("/v1/replays/{}", progress.id);
    let mut last_said = Instant::now();
    let progress = loop {
        tokio::time::sleep(POLL_EVERY).await;
        proc.check_alive()?;
        let (status, body) = admin::call_as(addr, token, "GET", &path, None).await?;
        if status != 200 {
            bail!("GET {path}: {status} {body}");
        }
        let p: ReplayProgress = serde_json::from_str(&body).context("replay progress")?;
        if p.state != ReplayState::Running {
            break p;
        }
        if last_said.elapsed() >= Duration::from_secs(5) {
            say(format!(
                "replay: sequence {} of {}, stored again {}",
                p.position.unwrap_or(0),
                p.last_sequence,
                p.accepted
            ));
            last_said = Instant::now();
        }
        if started.elapsed() >= timeout {
            let _ = admin::call_as(addr, token, "DELETE", &path, None).await;
            bail!("the replay did not finish within {timeout:?}: {p:?}");
        }
    };
    let wall_s = started.elapsed().as_secs_f64();
    let cpu_s = proc_sample(proc.pid()).map_or(0.0, |s| s.cpu_s) - cpu_before;
    let accepted = fake.stored().await?;
    let last_us = accepted
        .iter()
        .map(|a| a.received_us)
        .max()
        .unwrap_or(started_us);
    let throughput_per_s = accepted.len() as f64 / ((last_us - started_us) as f64 / 1e6).max(1e-3);
    // Only the event-by-event comparison of `analyze` is used: its rates and latencies assume
    // a live source.
    let d = analyze(&accepted, truth, &|_| Duration::ZERO, started_us, 1.0, 0.0).delivery;
    let ok = progress.state == ReplayState::Finished
        && d.lost == 0
        && d.duplicates_stored == 0
        && d.unexpected == 0;
    say(format!(
        "replay {:?} in {wall_s:.1}s: {} stored again ({throughput_per_s:.0}/s), lost {}, stored twice {}, unexpected {}",
        progress.state, d.stored, d.lost, d.duplicates_stored, d.unexpected
    ));
    Ok(ReplayFigures {
        progress,
        wall_s,
        stored: d.stored,
        throughput_per_s,
        ratio_to_publish_ceiling: ceiling.map(|c| throughput_per_s / c.publish_per_s.max(1e-9)),
        ratio_to_consume_ceiling: ceiling.map(|c| throughput_per_s / c.consume_per_s.max(1e-9)),
        floor_ratio: floor.map(|f| FloorRatio::of(throughput_per_s, f)),
        cpu_s,
        lost: d.lost,
        duplicates_stored: d.duplicates_stored,
        unexpected: d.unexpected,
        lost_examples: d.lost_examples,
        latency: "not measured: a replay re-sends old events, so source-to-stored time says nothing about it",
        ok,
    })
}
