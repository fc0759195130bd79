//! Step mode: fresh runs at a growing per-account rate until one breaks (loss, duplicates,
//! p99 over the limit, the source falling behind its schedule, or deliveries below the offered
//! rate); the last step that held is the highest sustainable rate. Then, optionally, one run at
//! half that rate for the p99 target.

use std::path::Path;

use serde::Serialize;

use crate::ceiling::Ceiling;
use crate::floor::Floor;
use crate::run::run_once;
use crate::scenario::Scenario;
use crate::stage::{RunOptions, RunReport};

/// One step's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub rate_per_account: f64,
    pub offered_per_s: f64,
    pub throughput_per_s: f64,
    pub latency_p99_ms: f64,
    pub source_lag_p99_ms: f64,
    pub lost: u64,
    pub duplicates_stored: u64,
    pub cpu_cores_mean: f64,
    /// tgingest CPU per event stored (µs).
    pub cpu_us_per_event: f64,
    pub peak_rss_mib: f64,
    /// Empty when the step held; otherwise why it broke.
    pub broke: Vec<String>,
    pub report_dir: String,
}

/// The step-mode report (`step-report.json`).
#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    pub scenario: String,
    pub accounts: u32,
    pub ceiling: Option<Ceiling>,
    /// The floor, measured before the first step and reused by the others.
    pub floor: Option<Floor>,
    pub steps: Vec<Step>,
    /// Per-account rate of the last step that held (None: even the first broke).
    pub highest_sustainable_rate_per_account: Option<f64>,
    /// Its delivered events per second.
    pub highest_sustainable_throughput_per_s: Option<f64>,
    /// Highest sustainable throughput / the floor.
    pub ratio_to_floor: Option<f64>,
    pub ratio_to_publish_ceiling: Option<f64>,
    pub ratio_to_consume_ceiling: Option<f64>,
    /// The run at half the highest sustainable rate.
    pub half_rate: Option<Step>,
    /// The targets, judged from the steps.
    pub targets: Vec<crate::stage::Target>,
}

fn judge(scn: &Scenario, r: &RunReport, dir: &Path) -> Step {
    let plan = &scn.step;
    let d = &r.delivery;
    let mut broke = Vec::new();
    if d.lost > 0 || d.duplicates_stored > 0 || d.unexpected > 0 {
        broke.push(format!(
            "lost {} / stored twice {} / unexpected {}",
            d.lost, d.duplicates_stored, d.unexpected
        ));
    }
    let p99_limit = plan.p99_limit.0.as_secs_f64() * 1000.0;
    if d.latency_ms.p99 > p99_limit {
        broke.push(format!(
            "p99 {:.1} ms > {:.0} ms",
            d.latency_ms.p99, p99_limit
        ));
    }
    let lag_limit = plan.source_lag_limit.0.as_secs_f64() * 1000.0;
    if d.source_lag_ms.p99 > lag_limit {
        broke.push(format!(
            "source lag p99 {:.0} ms > {:.0} ms (backpressure held the source back)",
            d.source_lag_ms.p99, lag_limit
        ));
    }
    if d.throughput_per_s < plan.min_delivered_share * d.offered_per_s {
        broke.push(format!(
            "delivered {:.0}/s < {:.0}% of offered {:.0}/s",
            d.throughput_per_s,
            plan.min_delivered_share * 100.0,
            d.offered_per_s
        ));
    }
    if r.drain_timed_out {
        broke.push("backlog did not drain before the timeout".into());
    }
    Step {
        rate_per_account: r.rate_per_account,
        offered_per_s: d.offered_per_s,
        throughput_per_s: d.throughput_per_s,
        latency_p99_ms: d.latency_ms.p99,
        source_lag_p99_ms: d.source_lag_ms.p99,
        lost: d.lost,
        duplicates_stored: d.duplicates_stored,
        cpu_cores_mean: r.resources.cpu_cores_mean,
        cpu_us_per_event: r.resources.cpu_us_per_event,
        peak_rss_mib: r.resources.peak_rss_mib,
        broke,
        report_dir: dir.display().to_string(),
    }
}

fn step_scenario(base: &Scenario, rate: f64) -> Scenario {
    let mut s = base.clone();
    s.simulator.rate = rate;
    s.duration = base.step.step_duration;
    s.warmup = base.step.warmup;
    s.step.enabled = false;
    s
}

/// Runs the steps; each step's report goes to `out/step-NN`.
pub async fn run_steps(
    base: &Scenario,
    tgingest: &Path,
    out: &Path,
    quiet: bool,
) -> anyhow::Result<StepReport> {
    let plan = &base.step;
    let mut rate = if plan.start_rate > 0.0 {
        plan.start_rate
    } else {
        base.simulator.rate
    };
    let mut ceiling: Option<Ceiling> = None;
    let mut floor: Option<Floor> = None;
    let mut steps: Vec<Step> = Vec::new();
    let mut best: Option<(f64, f64)> = None;
    for i in 1..=plan.max_steps {
        let scn = step_scenario(base, rate);
        let dir = out.join(format!("step-{i:02}"));
        let opts = RunOptions {
            tgingest: tgingest.to_path_buf(),
            out: dir.clone(),
            ceiling: ceiling.clone(),
            floor: floor.clone(),
            quiet,
        };
        eprintln!(
            "[step {i}] {} accounts x {rate} pos/s for {}",
            scn.simulator.accounts, scn.duration
        );
        let report = run_once(&scn, &opts).await?;
        crate::report::write(&dir, &report)?;
        ceiling = ceiling.or(report.ceiling.clone());
        floor = floor.or(report.floor.clone());
        let step = judge(base, &report, &dir);
        eprintln!(
            "[step {i}] throughput {:.0}/s of {:.0}/s offered, p99 {:.1} ms, source lag p99 {:.0} ms: {}",
            step.throughput_per_s,
            step.offered_per_s,
            step.latency_p99_ms,
            step.source_lag_p99_ms,
            if step.broke.is_empty() {
                "held".to_string()
            } else {
                format!("BROKE ({})", step.broke.join("; "))
            }
        );
        let held = step.broke.is_empty();
        if held {
            best = Some((rate, step.throughput_per_s));
        }
        steps.push(step);
        if !held {
            break;
        }
        rate *= plan.factor;
    }
    let half_rate = match (best, plan.half_rate_check) {
        (Some((r, _)), true) => {
            let scn = step_scenario(base, r / 2.0);
            let dir = out.join("half-rate");
            eprintln!("[half rate] {} pos/s per account", r / 2.0);
            let report = run_once(
                &scn,
                &RunOptions {
                    tgingest: tgingest.to_path_buf(),
                    out: dir.clone(),
                    ceiling: ceiling.clone(),
                    floor: floor.clone(),
                    quiet,
                },
            )
            .await?;
            crate::report::write(&dir, &report)?;
            Some(judge(base, &report, &dir))
        }
        _ => None,
    };
    let ratio = |f: fn(&Ceiling) -> f64| {
        best.zip(ceiling.as_ref())
            .map(|((_, t), c)| t / f(c).max(1e-9))
    };
    let ratio_publish = ratio(|c| c.publish_per_s);
    let ratio_to_floor = best
        .zip(floor.as_ref())
        .map(|((_, t), f)| t / f.live.events_per_s.max(1e-9));
    let mut targets = vec![crate::stage::Target {
        target: "highest sustainable throughput >= 0.8 x floor",
        value: ratio_to_floor.map_or("no step held or no floor".into(), |r| format!("{r:.3}")),
        met: ratio_to_floor.map(|r| r >= 0.8),
    }];
    targets.push(crate::stage::Target {
        target: "throughput >= 0.25 x raw publish ceiling (highest sustainable rate)",
        value: ratio_publish.map_or("no step held".into(), |r| format!("{r:.4}")),
        met: Some(ratio_publish.is_some_and(|r| r >= 0.25)),
    });
    if let Some(h) = &half_rate {
        targets.push(crate::stage::Target {
            target: "p99 <= 50 ms at half the highest sustainable rate",
            value: format!(
                "{:.1} ms at {} pos/s per account",
                h.latency_p99_ms, h.rate_per_account
            ),
            met: Some(h.latency_p99_ms <= 50.0),
        });
    }
    Ok(StepReport {
        targets,
        scenario: base.name.clone(),
        accounts: base.simulator.accounts,
        ratio_to_floor,
        ratio_to_publish_ceiling: ratio_publish,
        ratio_to_consume_ceiling: ratio(|c| c.consume_per_s),
        ceiling,
        floor,
        steps,
        highest_sustainable_rate_per_account: best.map(|b| b.0),
        highest_sustainable_throughput_per_s: best.map(|b| b.1),
        half_rate,
    })
}
