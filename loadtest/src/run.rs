//! One run of a scenario: start nats-server and the fake Switchboard, measure the ceiling, start
//! tgingest, drive and watch the load, stop everything, and compare with the ground truth.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;
use tgingest::keys::MasterKey;
use tgingest::nats_server::{NatsServer, ServerOptions, find_binary};
use tgingest::policy::Policy;
use tgingest::switchboard::{FakeOptions, FakeStats, FakeSwitchboard, Faults};
use tgingest::telegram::simulated::SimulatedWorld;

use crate::analysis::{Bin, Delivery, analyze};
use crate::ceiling::{Ceiling, measure};
use crate::monitor::{Monitor, Sample};
use crate::procs::{NeighbourClock, NeighbourCpu, ProcSample, Tgingest};
use crate::scenario::Scenario;
use crate::truth::Truth;

/// What the fake Switchboard saw, besides the stored envelopes.
#[derive(Debug, Clone, Serialize)]
pub struct FakeCounts {
    pub stored: u64,
    pub duplicates_answered: u64,
    pub rejected: u64,
    pub tool_errors: u64,
    pub dropped: u64,
    pub sessions_opened: u64,
}

impl From<FakeStats> for FakeCounts {
    fn from(s: FakeStats) -> Self {
        FakeCounts {
            stored: s.stored,
            duplicates_answered: s.duplicates,
            rejected: s.rejected,
            tool_errors: s.tool_errors,
            dropped: s.dropped,
            sessions_opened: s.sessions_opened,
        }
    }
}

/// The tgingest process's resource use.
#[derive(Debug, Clone, Serialize)]
pub struct Resources {
    /// CPU seconds (user + system) over the run.
    pub cpu_s: f64,
    /// Mean cores busy over the run (cpu_s / wall seconds).
    pub cpu_cores_mean: f64,
    /// Highest per-sample value.
    pub cpu_cores_max: f64,
    /// VmHWM at the end of the run.
    pub peak_rss_bytes: u64,
    pub peak_rss_mib: f64,
    /// Peak RSS divided by the number of accounts (includes the fixed base of the process).
    pub peak_rss_per_account_bytes: f64,
    /// VmRSS at the first sample (accounts started, little traffic yet).
    pub first_sample_rss_bytes: u64,
    /// tgingest CPU per event stored, in µs: what decides how far one node scales.
    pub cpu_us_per_event: f64,
    /// The other processes over the same time, and their CPU per event stored.
    pub neighbours: NeighbourCpu,
    pub nats_server_us_per_event: f64,
    pub loadtest_us_per_event: f64,
}

impl Resources {
    /// From tgingest's CPU seconds over the measured time, its last `/proc` sample, the
    /// neighbours' CPU over the same time, and the events the fake stored.
    pub(crate) fn measured(
        cpu_s: f64,
        wall_s: f64,
        end: &ProcSample,
        samples: &[Sample],
        accounts: u32,
        neighbours: NeighbourCpu,
        events: u64,
    ) -> Resources {
        let per_event = |s: f64| s * 1e6 / (events.max(1) as f64);
        Resources {
            cpu_s,
            cpu_cores_mean: cpu_s / wall_s.max(1e-3),
            cpu_cores_max: samples.iter().map(|s| s.cpu_cores).fold(0.0, f64::max),
            peak_rss_bytes: end.hwm,
            peak_rss_mib: end.hwm as f64 / 1048576.0,
            peak_rss_per_account_bytes: end.hwm as f64 / f64::from(accounts.max(1)),
            first_sample_rss_bytes: samples.first().map_or(0, |s| s.rss_bytes),
            cpu_us_per_event: per_event(cpu_s),
            nats_server_us_per_event: per_event(neighbours.nats_server_cpu_s),
            loadtest_us_per_event: per_event(neighbours.loadtest_cpu_s),
            neighbours,
        }
    }
}

/// Ratios of the pipeline's throughput to the bus ceiling.
#[derive(Debug, Clone, Serialize)]
pub struct CeilingRatio {
    pub throughput_per_s: f64,
    pub publish_ceiling_per_s: f64,
    pub consume_ceiling_per_s: f64,
    /// throughput / publish ceiling.
    pub ratio_to_publish: f64,
    pub ratio_to_consume: f64,
    /// Whether the throughput is limited by the offered load, not by tgingest (then the ratio
    /// says little: run step mode for the highest sustainable rate).
    pub load_limited: bool,
}

impl CeilingRatio {
    /// The delivery's throughput against this run's ceiling.
    pub(crate) fn of(d: &Delivery, c: &Ceiling) -> CeilingRatio {
        CeilingRatio {
            throughput_per_s: d.throughput_per_s,
            publish_ceiling_per_s: c.publish_per_s,
            consume_ceiling_per_s: c.consume_per_s,
            ratio_to_publish: d.throughput_per_s / c.publish_per_s.max(1e-9),
            ratio_to_consume: d.throughput_per_s / c.consume_per_s.max(1e-9),
            load_limited: d.source_lag_ms.p99 < 1000.0
                && d.throughput_per_s >= 0.9 * d.offered_per_s,
        }
    }
}

/// The machine, so figures are read in context.
#[derive(Debug, Clone, Serialize)]
pub struct Host {
    pub cpus: usize,
    /// 1-minute load average at the start of the run.
    pub loadavg_1m_at_start: f64,
    pub tgingest_binary: String,
    pub profile: &'static str,
}

/// One of the targets, reported (never asserted).
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    pub target: &'static str,
    pub value: String,
    /// `None` when this run cannot tell (e.g. the throughput target needs step mode).
    pub met: Option<bool>,
}

/// The targets this run can speak to.
pub(crate) fn targets(
    d: &Delivery,
    res: &Resources,
    ratio: Option<&CeilingRatio>,
    accounts: u32,
) -> Vec<Target> {
    let mut out = vec![Target {
        target: "zero loss and zero duplicates",
        value: format!(
            "lost {}, stored twice {}, unexpected {}",
            d.lost, d.duplicates_stored, d.unexpected
        ),
        met: Some(d.lost == 0 && d.duplicates_stored == 0 && d.unexpected == 0),
    }];
    if let Some(q) = ratio {
        out.push(Target {
            target: "throughput >= 0.25 x raw publish ceiling",
            value: format!("{:.4}", q.ratio_to_publish),
            // A load-limited run only shows headroom; step mode measures the limit.
            met: if q.load_limited && q.ratio_to_publish < 0.25 {
                None
            } else {
                Some(q.ratio_to_publish >= 0.25)
            },
        });
    }
    if accounts >= 10_000 {
        out.push(Target {
            target: "10,000 idle accounts in <= 1 GiB RSS",
            value: format!(
                "peak RSS {:.1} MiB for {accounts} accounts",
                res.peak_rss_mib
            ),
            met: Some(res.peak_rss_bytes <= 1 << 30),
        });
    }
    out
}

/// The JSON report of one run.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub scenario: Scenario,
    pub started_at: String,
    pub host: Host,
    pub accounts: u32,
    pub rate_per_account: f64,
    pub messages_per_account: u64,
    /// Mean encoded size of a `TG_RAW` message; the ceiling used this payload size.
    pub raw_message_bytes: usize,
    pub ceiling: Option<Ceiling>,
    pub ceiling_ratio: Option<CeilingRatio>,
    pub delivery: Delivery,
    pub resources: Resources,
    pub switchboard: FakeCounts,
    /// True when nothing was lost, stored twice, or unexpected (in the replay phase too).
    pub ok: bool,
    /// The targets, as far as this run can tell.
    pub targets: Vec<Target>,
    /// Whether the run waited out its drain timeout (the backlog did not clear).
    pub drain_timed_out: bool,
    pub wall_s: f64,
    pub bins: Vec<Bin>,
    pub samples: Vec<Sample>,
    /// The replay phase (`[replay] enabled`): replay throughput and exactly-once after it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replay: Option<crate::replay::ReplayFigures>,
    /// Account set-up before the measured window (fake-DC source only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub setup: Option<crate::fakedc::Setup>,
}

/// Options of one run besides the scenario.
pub struct RunOptions {
    pub tgingest: PathBuf,
    pub out: PathBuf,
    /// Reuse a ceiling measured earlier in the same invocation (step mode).
    pub ceiling: Option<Ceiling>,
    pub quiet: bool,
}

pub(crate) fn loadavg() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

/// The environment of the tgingest process (and of the loadtest's own view of its config).
pub(crate) fn tgingest_env(
    scn: &Scenario,
    messages: u64,
    nats_url: &str,
    sb_url: &str,
    data: &Path,
    key: &Path,
) -> anyhow::Result<Vec<(String, String)>> {
    let mut env: Vec<(String, String)> = vec![
        ("TGINGEST_NATS_URL".into(), nats_url.into()),
        ("TGINGEST_SWITCHBOARD_URL".into(), sb_url.into()),
        ("TGINGEST_NODE_DATA_DIR".into(), data.display().to_string()),
        ("TGINGEST_NODE_ID".into(), "loadtest".into()),
        ("TGINGEST_MASTER_KEY_FILE".into(), key.display().to_string()),
        ("TGINGEST_ADMIN_LISTEN".into(), String::new()),
        ("TGINGEST_LOGGING_LEVEL".into(), "warn".into()),
        (
            "TGINGEST_SWITCHBOARD_HEARTBEAT_INTERVAL".into(),
            scn.switchboard.heartbeat_interval.to_string(),
        ),
    ];
    if scn.switchboard.max_inflight > 0 {
        env.push((
            "TGINGEST_SWITCHBOARD_MAX_INFLIGHT".into(),
            scn.switchboard.max_inflight.to_string(),
        ));
    }
    let mut sim = scn.simulator.clone();
    sim.messages_per_account = messages;
    let table = toml::Table::try_from(&sim).context("simulator section")?;
    for (key, value) in table {
        let text = match value {
            toml::Value::String(s) => s,
            other => other.to_string(),
        };
        env.push((
            format!("TGINGEST_SIMULATOR_{}", key.to_ascii_uppercase()),
            text,
        ));
    }
    for (k, v) in &scn.env {
        env.push((k.clone(), v.clone()));
    }
    Ok(env)
}

/// What every run starts before tgingest: a temp dir with a master key, nats-server, and the
/// fake Switchboard with the scenario's faults; plus the host facts the report records.
pub(crate) struct Stage {
    pub host: Host,
    pub started_at: String,
    pub tmp: tempfile::TempDir,
    pub key: std::path::PathBuf,
    pub nats: NatsServer,
    pub fake: FakeSwitchboard,
}

impl Stage {
    pub(crate) async fn start(scn: &Scenario, opts: &RunOptions) -> anyhow::Result<Stage> {
        let host = Host {
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            loadavg_1m_at_start: loadavg(),
            tgingest_binary: opts.tgingest.display().to_string(),
            profile: if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            },
        };
        let started_at = jiff::Timestamp::now().to_string();
        let tmp = tempfile::Builder::new()
            .prefix("tgingest-loadtest-")
            .tempdir()
            .context("temp dir")?;
        let key = tmp.path().join("master.key");
        MasterKey::generate_file(&key).context("master key")?;

        let binary =
            find_binary(None).context("nats-server (run scripts/install-nats-server.sh)")?;
        let nats = NatsServer::start(ServerOptions::new(
            binary,
            tmp.path().join("nats"),
            "loadtest",
        ))
        .context("start nats-server")?;
        let fake = FakeSwitchboard::start(FakeOptions::default())
            .await
            .context("start the fake Switchboard")?;
        fake.set_faults(Faults {
            latency: scn.switchboard.latency.into(),
            tool_error_probability: scn.switchboard.tool_error_probability,
            drop_probability: scn.switchboard.drop_probability,
            drop_after_processing: scn.switchboard.drop_after_processing,
            ..Faults::default()
        });
        Ok(Stage {
            host,
            started_at,
            tmp,
            key,
            nats,
            fake,
        })
    }
}

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
    let Stage {
        host,
        started_at,
        tmp,
        key,
        mut nats,
        fake,
    } = Stage::start(scn, opts).await?;

    let rate = scn.simulator.rate;
    let messages = scn.messages_per_account(rate);
    let mut env = tgingest_env(
        scn,
        messages,
        &nats.url(),
        &fake.mcp_url(),
        &tmp.path().join("data"),
        &key,
    )?;
    // The replay phase talks to tgingest's admin API.
    let admin = if scn.replay.enabled {
        let addr = crate::admin::free_addr()?;
        env.retain(|(k, _)| k != "TGINGEST_ADMIN_LISTEN");
        env.push(("TGINGEST_ADMIN_LISTEN".into(), addr.clone()));
        Some(addr)
    } else {
        None
    };
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

    let ceiling = match (&opts.ceiling, scn.ceiling.messages) {
        (Some(c), _) => Some(c.clone()),
        (None, 0) => None,
        (None, n) => {
            say(format!("measuring the bus ceiling with {n} messages"));
            let c = measure(&nats.url(), n, truth.mean_raw_bytes, scn.ceiling.inflight).await?;
            say(format!(
                "ceiling: publish {:.0}/s, consume {:.0}/s",
                c.publish_per_s, c.consume_per_s
            ));
            Some(c)
        }
    };

    let t0 = Instant::now();
    let t0_us = jiff::Timestamp::now().as_microsecond();
    let mut proc = Tgingest::start(&opts.tgingest, &env, &opts.out.join("tgingest.log"))?;
    let neighbour_clock = NeighbourClock::start(nats.pid());
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
            fake.stop().await;
            outage_state = 1;
        } else if outage_state == 1 && t >= outage_at + outage_for {
            fake.restart()
                .await
                .context("restart the fake Switchboard")?;
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
        if sources_done && stored >= target && fake.stored_event_ids().len() as u64 >= target {
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
    if !fake.is_running() {
        let _ = fake.restart().await;
    }
    let accepted = fake.accepted();
    let counts = FakeCounts::from(fake.stats());
    let replay = match &admin {
        Some(addr) if !drain_timed_out => Some(
            crate::replay::run(
                addr,
                &mut proc,
                &fake,
                &truth,
                ceiling.as_ref(),
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
    let resources = Resources::measured(
        end_proc.cpu_s,
        wall_s,
        &end_proc,
        &samples,
        accounts,
        neighbours,
        counts.stored,
    );
    let ceiling_ratio = ceiling.as_ref().map(|c| CeilingRatio::of(&d, c));
    let ok = d.lost == 0
        && d.duplicates_stored == 0
        && d.unexpected == 0
        && replay.as_ref().is_none_or(|r| r.ok);
    let mut targets = targets(&d, &resources, ceiling_ratio.as_ref(), accounts);
    if let Some(r) = &replay {
        targets.push(Target {
            target: "replay: every event stored exactly once again",
            value: format!(
                "{:?}; lost {}, stored twice {}, unexpected {}",
                r.progress.state, r.lost, r.duplicates_stored, r.unexpected
            ),
            met: Some(r.ok),
        });
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
