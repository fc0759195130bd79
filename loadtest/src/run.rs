//! One run of a scenario: start nats-server and the fake Switchboard, measure the ceiling, start
//! tgingest, drive and watch the load, stop everything, and compare with the ground truth.

use std::time::{Duration, Instant};

use anyhow::Context;
use tgingest::policy::Policy;
use tgingest::telegram::simulated::SimulatedWorld;

use crate::analysis::analyze;
use crate::floor::FloorRatio;
use crate::monitor::Monitor;
use crate::procs::{NeighbourClock, Tgingest};
use crate::scenario::Scenario;
use crate::stage::{
    CeilingRatio, Resources, RunOptions, RunReport, Stage, Target, Yardsticks, targets, yardsticks,
};
use crate::truth::Truth;

/// Runs `scn` once; writes nothing but `tgingest.log` and `nats-server.log` (the caller writes
/// the report).
pub async fn run_once(scn: &Scenario, opts: &RunOptions) -> anyhow::Result<RunReport> {
    if scn.source == crate::scenario::SourceKind::FakeDc {
        return crate::fakedc::run_once(scn, opts).await;
    }
    std::fs::create_dir_all(&opts.out).with_context(|| format!("create {}", opts.out.display()))?;
    let say = |m: String| {
        if !opts.quiet {
            eprintln!("[{}] {m}", scn.name);
        }
    };
    let stage = Stage::start(opts).await?;

    let rate = scn.simulator.rate;
    let messages = scn.messages_per_account(rate);
    // The replay phase talks to tgingest's admin API.
    let admin = match scn.replay.enabled {
        true => Some(crate::admin::free_addr()?),
        false => None,
    };
    let env = stage.env(scn, messages, admin.as_deref())?;
    // The same loader tgingest uses, on the same variables: the same world and the same policy.
    let loaded = tgingest::config::load(None, env.clone()).context("tgingest config from env")?;
    let config = loaded.config;
    let world = SimulatedWorld::new(config.simulator.clone()).context("simulated world")?;
    let policy = Policy::new(&config.policy).context("policy")?;
    say(format!(
        "ground truth: {} accounts x {} positions",
        world.accounts(),
        messages
    ));
    let truth = Truth::build(&world, &policy, messages);
    say(format!(
        "{} events must arrive; mean TG_RAW message {} bytes",
        truth.expected.len(),
        truth.mean_raw_bytes
    ));

    let pool = crate::floor::sample_events(&world, &policy, 2_000);
    let yard = yardsticks(
        scn,
        opts,
        &stage,
        &config,
        &pool,
        truth.mean_raw_bytes,
        &say,
    )
    .await?;
    let pids = stage.neighbours();
    let (host, started_at, tmp, mut nats, fake) = stage.into_parts();

    let t0 = Instant::now();
    let t0_us = jiff::Timestamp::now().as_microsecond();
    let mut proc = Tgingest::start(&opts.tgingest, &env, &opts.out.join("tgingest.log"))?;
    let neighbour_clock = NeighbourClock::start(pids);
    say(format!("tgingest started (pid {})", proc.pid()));
    let mut monitor = Monitor::connect(&nats.url(), proc.pid()).await?;

    let duration: Duration = scn.duration.into();
    let outage_at: Duration = scn.switchboard.outage_at.into();
    let outage_for: Duration = scn.switchboard.outage_for.into();
    let outage = !outage_for.is_zero();
    let deadline =
        duration + if outage { outage_for } else { Duration::ZERO } + scn.drain_timeout.0;
    let interval: Duration = scn.sample_interval.into();
    let target = truth.expected.len() as u64;
    let batches = scn
        .env
        .get("TGINGEST_SWITCHBOARD_MODE")
        .is_some_and(|m| m == "conversation_batches");
    let mut samples = Vec::new();
    let mut outage_state = 0; // 0 before, 1 during, 2 after
    let mut next = t0 + interval;
    let mut drain_timed_out = false;
    loop {
        tokio::time::sleep_until(next.into()).await;
        next += interval;
        let t = t0.elapsed();
        if outage && outage_state == 0 && t >= outage_at {
            say(format!(
                "Switchboard down for {}",
                scn.switchboard.outage_for
            ));
            fake.down().await.context("stop the fake Switchboard")?;
            outage_state = 1;
        } else if outage_state == 1 && t >= outage_at + outage_for {
            fake.up().await.context("restart the fake Switchboard")?;
            say("Switchboard back".into());
            outage_state = 2;
        }
        proc.check_alive()?;
        let s = monitor.sample(t.as_secs_f64(), &fake).await;
        if !opts.quiet && (samples.len() % 5 == 4) {
            say(format!(
                "t={:>5.1}s stored {}/{} raw {} clean {} cpu {:.2} rss {:.0} MiB",
                s.t,
                s.stored,
                target,
                s.raw_last_seq,
                s.clean_last_seq,
                s.cpu_cores,
                s.rss_bytes as f64 / 1048576.0
            ));
        }
        let stored = s.stored;
        samples.push(s);
        let sources_done = t >= duration && outage_state != 1;
        // Envelopes stored, a cheap lower bound, unless batches carry several events each.
        let enough = stored >= target || batches;
        if sources_done && enough && fake.stored_unique().await? >= target {
            break;
        }
        if t >= deadline {
            drain_timed_out = true;
            say("drain timeout: stopping with events outstanding".into());
            break;
        }
    }
    let wall_s = t0.elapsed().as_secs_f64();
    let end_proc = crate::procs::proc_sample(proc.pid()).unwrap_or_default();
    let neighbours = neighbour_clock.elapsed();
    if outage_state == 1 {
        fake.up().await.context("restart the fake Switchboard")?;
    }
    let accepted = fake.stored().await?;
    let counts = fake.status().await?.counts;
    let replay = match &admin {
        Some(addr) if !drain_timed_out => Some(
            crate::replay::run(
                crate::admin::Target {
                    addr,
                    token: crate::admin::node_token(&config)?.as_deref(),
                },
                &mut proc,
                &fake,
                &truth,
                &yard,
                scn.replay.timeout.into(),
                &say,
            )
            .await?,
        ),
        _ => None,
    };
    proc.stop(Duration::from_secs(10));
    fake.stop().await;
    nats.stop();
    let idle = if scn.idle.window.is_zero() {
        None
    } else {
        Some(crate::idle::measure(scn, opts, &say).await?)
    };
    let log = tmp.path().join("nats/nats-server.log");
    let _ = std::fs::copy(&log, opts.out.join("nats-server.log"));

    let analysis = analyze(
        &accepted,
        &truth,
        &|n| world.schedule(n),
        t0_us,
        duration.as_secs_f64(),
        scn.warmup.0.as_secs_f64(),
    );
    let d = analysis.delivery;
    let accounts = world.accounts();
    let mut resources = Resources::measured(
        end_proc.cpu_s,
        wall_s,
        &end_proc,
        &samples,
        accounts,
        neighbours,
        // Events stored (a batch counts its members), not envelopes: CPU per event.
        accepted.len() as u64,
    );
    resources.idle = idle;
    let Yardsticks { ceiling, floor } = yard;
    let ceiling_ratio = ceiling.as_ref().map(|c| CeilingRatio::of(&d, c));
    let floor_ratio = floor
        .as_ref()
        .map(|f| FloorRatio::of(d.throughput_per_s, &f.live));
    let ok = d.lost == 0
        && d.duplicates_stored == 0
        && d.unexpected == 0
        && replay.as_ref().is_none_or(|r| r.ok);
    let mut targets = targets(
        &d,
        &resources,
        ceiling_ratio.as_ref(),
        floor_ratio.as_ref(),
        accounts,
    );
    if let Some(r) = &replay {
        targets.push(Target {
            target: "replay: every event stored exactly once again",
            value: format!(
                "{:?}; lost {}, stored twice {}, unexpected {}",
                r.progress.state, r.lost, r.duplicates_stored, r.unexpected
            ),
            met: Some(r.ok),
        });
        if let Some(f) = &r.floor_ratio {
            targets.push(Target {
                target: "replay >= 0.8 x replay floor",
                value: format!("{:.3}", f.ratio),
                met: Some(f.ratio >= 0.8),
            });
        }
    }
    Ok(RunReport {
        targets,
        scenario: scn.clone(),
        started_at,
        host,
        accounts,
        rate_per_account: rate,
        messages_per_account: messages,
        raw_message_bytes: truth.mean_raw_bytes,
        ceiling,
        ceiling_ratio,
        floor,
        floor_ratio,
        delivery: d,
        resources,
        switchboard: counts,
        ok,
        drain_timed_out,
        wall_s,
        bins: analysis.bins,
        samples,
        setup: None,
        replay,
    })
}
